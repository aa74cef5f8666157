"""Model proposals: the model versions people propose, review and serve, kept in PostgreSQL.

A model change is proposed (by anyone with the `model` scope, from a form, a YAML document or a
file), then approved by someone other than its author, which starts it as the shadow model,
or rejected. A shadow or approved proposal is promoted to active; the active one it replaces
is retired, and any retired proposal can be restored. At most one proposal is active and one
shadow (unique indexes); a newer approval sends the shadow back to `approved`. Every step is
a row of `model_proposal_steps`: who, when, why.

Every scorer and API process serves the active and shadow models (`serving`) and follows
them as they change. An empty database is seeded from the model files the first process was
started with (`seed`); after that the files are only one way to propose.

Each step runs in the caller's transaction under one advisory lock, so steps are taken one at
a time across processes and a step reads the statuses it changes as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import structlog
from sqlalchemy import func, select, text, update
from sqlalchemy.dialects import postgresql
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from shared.config import ScorerSettings
from shared.db import ModelProposalRow, ModelProposalStepRow, ModelVersionRow
from shared.errors import ConfigurationError, HealthScoreError
from shared.scoring.kinds import kind_index
from shared.scoring.model import Model, load_model

log = structlog.get_logger(__name__)
Status = Literal["proposed", "approved", "shadow", "active", "retired", "rejected"]  # in order
ROLES = ("active", "shadow")
SEEDER = "configuration"
# the statuses each step is taken from; the steps a note must say why for (read later)
STEPS: dict[str, tuple[str, ...]] = {
    "approve": ("proposed",),
    "reject": ("proposed",),
    "promote": ("shadow", "approved"),
    "restore": ("retired",),
}
NOTE_NEEDED = frozenset({"reject", "restore"})
_MIGRATED = text("SELECT to_regclass('model_proposals') IS NOT NULL")
_LOCK = text("SELECT pg_advisory_xact_lock(hashtext('healthscore.model_proposals'))")


class ProposalRefused(HealthScoreError):
    """A step that cannot be taken: `why` is `unknown` (no such proposal), `status` (not from
    its status), `reviewer` (an author approving their own), `unchanged` (the version is
    already served or proposed), `clash` (it cannot be served beside the other role's
    model: an aggregate named by both, differently) or `note` (a step that must say why)."""

    def __init__(
        self,
        why: Literal["unknown", "status", "reviewer", "unchanged", "clash", "note"],
        detail: str,
    ) -> None:
        super().__init__(detail)
        self.why = why
        self.detail = detail


@dataclass(frozen=True)
class Step:
    step: str
    actor: str
    note: str
    status_before: str | None
    status_after: str
    at: datetime


@dataclass(frozen=True)
class Proposal:
    proposal_id: int
    version: str
    name: str
    status: Status
    based_on: str | None
    author: str
    reason: str
    proposed_at: datetime
    reviewer: str | None
    reviewed_at: datetime | None
    review_note: str | None
    updated_at: datetime
    steps: list[Step] = field(default_factory=list)


_COLUMNS = [c for c in ModelProposalRow.__table__.c]


def _proposal(row: Any) -> Proposal:
    return Proposal(**{c.name: getattr(row, c.name) for c in _COLUMNS})


async def register(conn: AsyncConnection, models: list[Model], at: datetime) -> None:
    """Record these versions' documents (each once): proposals, scores and their explanations
    name a version, and read its document from `model_versions`."""
    rows = [
        {
            "version": m.version,
            "name": m.name,
            "document": m.model_dump(mode="json"),
            "registered_at": at,
        }
        for m in models
    ]
    if rows:
        await conn.execute(postgresql.insert(ModelVersionRow).values(rows).on_conflict_do_nothing())


async def serving(conn: AsyncConnection) -> dict[str, Model]:
    """The models to serve, by role: the active proposal's, and the shadow's if there is one."""
    rows = await conn.execute(
        select(ModelProposalRow.status, ModelVersionRow.document)
        .join(ModelVersionRow, ModelVersionRow.version == ModelProposalRow.version)
        .where(ModelProposalRow.status.in_(ROLES))
    )
    return {status: Model.model_validate(document) for status, document in rows}


async def seed(conn: AsyncConnection, models: dict[str, Model], at: datetime) -> bool:
    """Make these models (from the configured files) the active and shadow proposals if the
    database has no proposal at all; False if it had."""
    await conn.execute(_LOCK)
    if await conn.scalar(select(func.count()).select_from(ModelProposalRow)):
        return False
    await register(conn, list(models.values()), at)
    for role, model in models.items():
        proposal_id = await _insert(
            conn, model, role, SEEDER, "the model file the first service was started with", at
        )
        await conn.execute(
            update(ModelProposalRow)
            .where(ModelProposalRow.proposal_id == proposal_id)
            .values(reviewer=SEEDER, reviewed_at=at, review_note="")
        )
        await _step(conn, proposal_id, "seeded", SEEDER, "", None, role, at)
    return True


async def propose(
    conn: AsyncConnection, model: Model, author: str, reason: str, at: datetime
) -> Proposal:
    """A new proposal of `model`; refused when that version is already served or proposed."""
    await conn.execute(_LOCK)
    open_ = await conn.execute(
        select(ModelProposalRow).where(
            ModelProposalRow.version == model.version,
            ModelProposalRow.status.in_(("proposed", "approved", "shadow", "active")),
        )
    )
    if (same := open_.first()) is not None:
        raise ProposalRefused(
            "unchanged",
            f"version {model.version} is already proposal {same.proposal_id} ({same.status})",
        )
    await register(conn, [model], at)
    proposal_id = await _insert(conn, model, "proposed", author, reason, at)
    await _step(conn, proposal_id, "proposed", author, reason, None, "proposed", at)
    return await read(conn, proposal_id)


async def approve(
    conn: AsyncConnection, proposal_id: int, reviewer: str, note: str, at: datetime
) -> Proposal:
    """Approve a proposal and start it as the shadow model (the shadow before it goes back to
    `approved`). Never by its author."""
    proposal = await _locked(conn, proposal_id, "approve", note)
    if reviewer == proposal.author:
        raise ProposalRefused(
            "reviewer", f"proposal {proposal_id} is {reviewer}'s own: someone else approves it"
        )
    await _beside(conn, proposal, "active")
    if (shadow := await _holding(conn, "shadow")) is not None:
        await _move(
            conn,
            shadow,
            "approved",
            "unshadowed",
            reviewer,
            f"proposal {proposal_id} is the shadow now",
            at,
        )
    await _move(conn, proposal, "shadow", "approved", reviewer, note, at, review=True)
    return await read(conn, proposal_id)


async def reject(
    conn: AsyncConnection, proposal_id: int, reviewer: str, note: str, at: datetime
) -> Proposal:
    """Turn a proposal down (its author withdrawing it, or a reviewer declining)."""
    proposal = await _locked(conn, proposal_id, "reject", note)
    await _move(conn, proposal, "rejected", "rejected", reviewer, note, at, review=True)
    return await read(conn, proposal_id)


async def promote(
    conn: AsyncConnection, proposal_id: int, actor: str, note: str, at: datetime
) -> Proposal:
    """Make an approved (or shadow) proposal the active one; the active one is retired."""
    proposal = await _locked(conn, proposal_id, "promote", note)
    await _beside(conn, proposal, "shadow")
    return await _activate(conn, proposal, "promoted", actor, note, at)


async def restore(
    conn: AsyncConnection, proposal_id: int, actor: str, note: str, at: datetime
) -> Proposal:
    """Make a retired proposal active again (a rollback); the active one is retired."""
    proposal = await _locked(conn, proposal_id, "restore", note)
    await _beside(conn, proposal, "shadow")
    return await _activate(conn, proposal, "restored", actor, note, at)


async def take(
    conn: AsyncConnection, step: str, proposal_id: int, actor: str, note: str, at: datetime
) -> Proposal:
    """`step` (one of STEPS) by `actor`: what the API, the console and the CLI call."""
    return await {"approve": approve, "reject": reject, "promote": promote, "restore": restore}[
        step
    ](conn, proposal_id, actor, note, at)


def steps_from(status: str) -> list[str]:
    """The steps a proposal of this status can take."""
    return [step for step, statuses in STEPS.items() if status in statuses]


async def read(conn: AsyncConnection, proposal_id: int, steps: bool = True) -> Proposal:
    row = (
        await conn.execute(
            select(ModelProposalRow).where(ModelProposalRow.proposal_id == proposal_id)
        )
    ).first()
    if row is None:
        raise ProposalRefused("unknown", f"no model proposal {proposal_id}")
    proposal = _proposal(row)
    if steps:
        rows = await conn.execute(
            select(ModelProposalStepRow)
            .where(ModelProposalStepRow.proposal_id == proposal_id)
            .order_by(ModelProposalStepRow.step_id)
        )
        proposal.steps.extend(
            Step(r.step, r.actor, r.note, r.status_before, r.status_after, r.at) for r in rows
        )
    return proposal


async def listed(
    conn: AsyncConnection, statuses: list[str] | None = None, limit: int = 100
) -> list[Proposal]:
    """Proposals, newest first."""
    query = select(ModelProposalRow).order_by(ModelProposalRow.proposal_id.desc()).limit(limit)
    if statuses:
        query = query.where(ModelProposalRow.status.in_(statuses))
    return [_proposal(row) for row in await conn.execute(query)]


async def document(conn: AsyncConnection, version: str) -> Model | None:
    found = await conn.scalar(
        select(ModelVersionRow.document).where(ModelVersionRow.version == version)
    )
    return None if found is None else Model.model_validate(found)


# --- the steps' parts ----------------------------------------------------------------------


async def _insert(
    conn: AsyncConnection, model: Model, status: str, author: str, reason: str, at: datetime
) -> int:
    active = await _holding(conn, "active")
    proposal_id = await conn.scalar(
        postgresql.insert(ModelProposalRow)
        .values(
            version=model.version,
            name=model.name,
            status=status,
            based_on=None if active is None else active.version,
            author=author,
            reason=reason,
            proposed_at=at,
            updated_at=at,
        )
        .returning(ModelProposalRow.proposal_id)
    )
    assert proposal_id is not None
    return int(proposal_id)


async def _holding(conn: AsyncConnection, status: str) -> Proposal | None:
    row = (
        await conn.execute(select(ModelProposalRow).where(ModelProposalRow.status == status))
    ).first()
    return None if row is None else _proposal(row)


async def _locked(conn: AsyncConnection, proposal_id: int, step: str, note: str) -> Proposal:
    """The proposal, when `step` can be taken on it now (under the steps' lock)."""
    if step in NOTE_NEEDED and not note.strip():
        raise ProposalRefused("note", f"say why in the note: a {step} is read later")
    await conn.execute(_LOCK)
    proposal = await read(conn, proposal_id, steps=False)
    if proposal.status not in STEPS[step]:
        raise ProposalRefused(
            "status",
            f"proposal {proposal_id} is {proposal.status}: `{step}` takes a proposal that is "
            f"{' or '.join(STEPS[step])}",
        )
    return proposal


async def _beside(conn: AsyncConnection, proposal: Proposal, role: str) -> None:
    """Refuse a proposal that could not be served beside the one holding `role`."""
    other = await _holding(conn, role)
    if other is None or other.proposal_id == proposal.proposal_id:
        return
    models = [await document(conn, r.version) for r in (proposal, other)]
    try:
        kind_index([m for m in models if m is not None])
    except ConfigurationError as exc:
        raise ProposalRefused(
            "clash",
            f"proposal {proposal.proposal_id} cannot be served beside the {role} model: {exc}",
        ) from exc


async def _activate(
    conn: AsyncConnection, proposal: Proposal, step: str, actor: str, note: str, at: datetime
) -> Proposal:
    if (active := await _holding(conn, "active")) is not None:
        await _move(
            conn,
            active,
            "retired",
            "retired",
            actor,
            f"proposal {proposal.proposal_id} is active now",
            at,
        )
    await _move(conn, proposal, "active", step, actor, note, at)
    return await read(conn, proposal.proposal_id)


async def _move(
    conn: AsyncConnection,
    proposal: Proposal,
    status: str,
    step: str,
    actor: str,
    note: str,
    at: datetime,
    *,
    review: bool = False,
) -> None:
    values: dict[str, Any] = {"status": status, "updated_at": at}
    if review:
        values |= {"reviewer": actor, "reviewed_at": at, "review_note": note}
    await conn.execute(
        update(ModelProposalRow)
        .where(ModelProposalRow.proposal_id == proposal.proposal_id)
        .values(**values)
    )
    await _step(conn, proposal.proposal_id, step, actor, note, proposal.status, status, at)


async def _step(
    conn: AsyncConnection,
    proposal_id: int,
    step: str,
    actor: str,
    note: str,
    before: str | None,
    after: str,
    at: datetime,
) -> None:
    await conn.execute(
        postgresql.insert(ModelProposalStepRow).values(
            proposal_id=proposal_id,
            step=step,
            actor=actor,
            note=note,
            status_before=before,
            status_after=after,
            at=at,
        )
    )


def configured(cfg: ScorerSettings) -> dict[str, Model]:
    """The models the settings' files name, by role: what an empty database is seeded with."""
    models = {"active": load_model(cfg.model_path)}
    if cfg.shadow_model_path is not None:
        models["shadow"] = load_model(cfg.shadow_model_path)
    return models


async def changed(
    engine: AsyncEngine, files: dict[str, Model], served: dict[str, str], at: datetime
) -> dict[str, Model] | None:
    """The active and shadow models when their versions differ from `served` (role ->
    version), else None. A look reads the two versions, and the documents only when they
    changed. An empty database is seeded with `files` first; before migration 0018 (a rolling
    upgrade, at 0015 or 0016) there are no proposals and `files` are served, as release 0014
    served them."""
    async with engine.begin() as conn:
        if not await conn.scalar(_MIGRATED):
            found = files
        else:
            versions = await _versions(conn)
            if "active" not in versions and await seed(conn, files, at):
                versions = await _versions(conn)
            if "active" not in versions:  # not through this module: keep serving
                log.error("proposals.no_active_model", found=sorted(versions))
                return None
            if versions == served:
                return None
            found = await serving(conn)
    return None if {role: m.version for role, m in found.items()} == served else found


async def following(engine: AsyncEngine, files: dict[str, Model], at: datetime) -> dict[str, Model]:
    """The models to serve now (a process starting, an import)."""
    return await changed(engine, files, {}, at) or files


async def _versions(conn: AsyncConnection) -> dict[str, str]:
    rows = await conn.execute(
        select(ModelProposalRow.status, ModelProposalRow.version).where(
            ModelProposalRow.status.in_(ROLES)
        )
    )
    return {status: version for status, version in rows}
