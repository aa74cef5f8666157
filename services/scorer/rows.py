"""An account re-scored into a batch: the rows one account adds to a transaction.

`Rescorer.into` evaluates the account under every served model (`rescore`, pure) and adds to
the batch its `account_states` row, its profile when that changed, the ids its memory took, its
scores, history and change events. Both the batches of signals (prepare.py) and the re-scores
of time alone (sweep.py) go through it, so every write of an account is the same shape.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import datetime

from services.scorer.context import ScorerContext
from services.scorer.memory import first_kept
from services.scorer.rescore import (
    AccountEntry,
    Prior,
    profile_row,
    rescore,
    seen_rows,
    state_row,
)
from services.scorer.store import Batch
from shared.errors import HealthScoreError, RecordRefused


@contextlib.contextmanager
def scoring_errors_refuse() -> Iterator[None]:
    """An error of the scoring core on an account's signals or state is that account's, not
    the batch's: raised as RecordRefused, for the caller to isolate."""
    try:
        yield
    except HealthScoreError:
        raise
    except Exception as exc:
        raise RecordRefused("scoring_failed", f"{type(exc).__name__}: {exc}") from exc


class Rescorer:
    def __init__(self, ctx: ScorerContext) -> None:
        self.cfg = ctx.cfg
        self.horizon = ctx.cfg.dedup_horizon_hours * 3600
        self.changes_topic = ctx.settings.kafka.topics.changes
        self.models = ctx.models
        self.news = ctx.news

    def into(
        self,
        batch: Batch,
        account_id: str,
        entry: AccountEntry,
        now: datetime,
        cause: str,
        signal_ids: list[str],
        reflects: float | None = None,
        replay: bool = False,
    ) -> None:
        """Re-score one account at `now` for `cause` (the signals `signal_ids` applied, or
        none: time alone) and add its rows to `batch`."""
        rows, evaluation = rescore(
            models=self.models.models,
            account_id=account_id,
            entry=entry,
            at=now.timestamp(),
            recorded_at=now,
            cause=cause,
            signal_ids=signal_ids,
            history_min_delta=self.cfg.history_min_delta,
            changes_topic=self.changes_topic,
            reflects=reflects,
            replay=replay,
            news=self.news.items,
            prior=Prior(self.models.versions, self.news.by_id),
        )
        next_review = evaluation.next_review_at
        if any(score.held for score in entry.scores.values()):  # the sweep sends them
            next_review = min(next_review, now.timestamp() + self.cfg.replay_hold_seconds)
        changed = bool(signal_ids)  # else a re-score of time alone: the state is as stored
        at = now.timestamp()
        seen = seen_rows(account_id, entry, first_kept(at, self.horizon), at)
        batch.add(
            profile_row(account_id, entry, now, evaluation),
            state_row(account_id, entry, now, next_review, evaluation, changed),
            seen,
            rows,
        )
