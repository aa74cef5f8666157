"""A deterministic synthetic customer base: accounts with hidden health trajectories.

Pure: `World(seed, accounts)` and `day_events(account, day)` give the same raw events for the
same arguments on every machine. Each account follows a trajectory (healthy, declining, shock,
recovering, silent); its hidden health h(day) in [0, 1] drives how much it uses the product, how
often it files tickets and how it pays. Declining accounts (and some shocked or silent ones)
eventually cancel: that day is their ground-truth churn date.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

INDUSTRIES = (
    "healthcare",
    "finance",
    "retail",
    "software",
    "manufacturing",
    "education",
    "media",
    "logistics",
)
REGIONS = ("na", "emea", "apac", "latam")
TIERS = (("free", 0.15), ("starter", 0.35), ("growth", 0.35), ("enterprise", 0.15))
TRAJECTORIES = (
    ("healthy", 0.5),
    ("declining", 0.2),
    ("shock", 0.1),
    ("recovering", 0.1),
    ("silent", 0.1),
)
FEATURES = ("dashboards", "reports", "alerts", "api", "integrations", "exports", "workflows")
SEATS = {"free": (1, 5), "starter": (3, 20), "growth": (15, 120), "enterprise": (100, 2000)}
PRICE_PER_SEAT = {"free": 0, "starter": 12, "growth": 25, "enterprise": 40}

GOOD_TEXT = (
    "Thanks, that solved it quickly. Great support!",
    "Quick question about exporting reports, love the product.",
    "Works well, just wondering how to add a teammate.",
)
BAD_TEXT = (
    "This is broken again and it is costing us money. Very frustrated.",
    "Terrible experience, the dashboard has been down all day and nobody answers.",
    "We are considering cancelling, nothing works and support is slow.",
)


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


# who looks after the simulated accounts, in turn; `make run`'s own token is the first
OWNERS = ("you@example.com", "dana@example.com", "lee@example.com", "sam@example.com")
# of every GROUP accounts, the first is a group (a parent) of the next GROUP_CHILDREN
GROUP, GROUP_CHILDREN = 20, 3


@dataclass(frozen=True)
class Account:
    index: int
    account_id: str
    name: str
    industry: str
    region: str
    tier: str
    seats: int
    owner: str  # the customer-success manager who looks after it
    parent: str | None  # the group it belongs to, when it is one of a group's accounts
    trajectory: str
    turn_day: int  # when the trajectory's change begins
    span_days: int  # how long the change takes
    churn_day: int | None  # ground truth: the day the account cancels, if it does

    def health(self, day: int) -> float:
        t = self.trajectory
        if t == "healthy":
            return 0.85
        progress = min(max((day - self.turn_day) / self.span_days, 0.0), 1.0)
        if t == "declining":
            return 0.8 - 0.7 * progress
        if t == "shock":
            return 0.85 if day < self.turn_day else 0.25
        if t == "recovering":
            return 0.3 + 0.55 * progress
        return 0.8  # silent: healthy until it goes quiet at turn_day

    def silent(self, day: int) -> bool:
        return self.trajectory == "silent" and day >= self.turn_day


class World:
    """`accounts` synthetic accounts over `days` days starting at `start`."""

    def __init__(
        self, seed: int, accounts: int, *, start: datetime, days: int, intensity: float = 1.0
    ) -> None:
        self.seed = seed
        self.start = start
        self.days = days
        self.intensity = intensity
        self.accounts = [self._account(i) for i in range(accounts)]

    def _account(self, i: int) -> Account:
        rng = random.Random(f"{self.seed}:account:{i}")
        tier = _pick(rng, TIERS)
        trajectory = _pick(rng, TRAJECTORIES)
        turn = rng.randint(self.days // 6, max(self.days // 6, self.days * 2 // 3))
        span = rng.randint(20, 90)
        churn: int | None = None
        if trajectory == "declining":
            churn = turn + span + rng.randint(0, 20)
        elif trajectory == "shock" and rng.random() < 0.6:
            churn = turn + rng.randint(20, 60)
        elif trajectory == "silent" and rng.random() < 0.7:
            churn = turn + rng.randint(30, 75)
        lo, hi = SEATS[tier]
        return Account(
            index=i,
            account_id=f"acc-{i:06d}",
            name=f"Customer {i}",
            industry=rng.choice(INDUSTRIES),
            region=rng.choice(REGIONS),
            tier=tier,
            seats=rng.randint(lo, hi),
            owner=OWNERS[i % len(OWNERS)],
            parent=f"acc-{i - i % GROUP:06d}" if 0 < i % GROUP <= GROUP_CHILDREN else None,
            trajectory=trajectory,
            turn_day=turn,
            span_days=span,
            churn_day=churn,
        )

    def churned_at(self, account: Account) -> datetime | None:
        if account.churn_day is None or account.churn_day >= self.days:
            return None
        return self.start + timedelta(days=account.churn_day, hours=12)

    def day_events(self, account: Account, day: int) -> list[dict[str, Any]]:
        """Raw v1 events of one account on one day, in time order (empty once churned)."""
        if account.churn_day is not None and day > account.churn_day:
            return []
        rng = random.Random(f"{self.seed}:{account.index}:{day}")
        h = min(max(account.health(day) + rng.gauss(0, 0.05), 0.0), 1.0)
        today = _Day(account, self.start + timedelta(days=day), rng)
        if day in (0, 30):
            today.profile(onboarding=day == 0)
        if not account.silent(day):
            users = today.usage(day, h, self.intensity)
            today.support(day, h, self.intensity)
            today.survey(h, self.intensity, users)
        if day % 30 == 15 and account.tier != "free":
            today.invoice(day, h)
        if account.churn_day == day:
            today.emit("subscription_cancelled", reason="churned")
        return today.ordered()


class _Day:
    """One account's events of one day: emitted in any order, at random times of the day,
    and handed out in time order. Every draw comes from the day's own `rng`, in the order
    of the calls, so that a run repeated with the same seed gives the same events."""

    def __init__(self, account: Account, start: datetime, rng: random.Random) -> None:
        self.account = account
        self.start = start
        self.rng = rng
        self.date = start.date().isoformat()  # ids stay the same when a run is repeated
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, not_before: datetime | None = None, **fields: Any) -> datetime:
        at = self.start + timedelta(seconds=self.rng.randint(0, 86_399))
        if not_before is not None and at <= not_before:  # a ticket's events in order
            at = not_before + timedelta(seconds=1)
        account_id = self.account.account_id
        event = {
            "event_id": f"{account_id}-{self.date}-{len(self.events) + 1}",
            "account_id": account_id,
            "occurred_at": at.isoformat(),
            "type": kind,
            "schema_version": 1,
            **fields,
        }
        self.events.append((at.isoformat(), event))
        return at

    def ordered(self) -> list[dict[str, Any]]:
        self.events.sort(key=lambda pair: pair[0])
        return [event for _, event in self.events]

    def profile(self, *, onboarding: bool) -> None:
        """The account's profile (onboarding on its first day, then mature), and on the first
        day its annual subscription."""
        account = self.account
        group: dict[str, Any] = {"parent_account_id": account.parent} if account.parent else {}
        self.emit(
            "account_profile_updated",
            name=account.name,
            industry=account.industry,
            region=account.region,
            tier=account.tier,
            lifecycle_stage="onboarding" if onboarding else "mature",
            owner=account.owner,
            **group,
        )
        if onboarding:
            self.emit(
                "subscription_created",
                plan=f"{account.tier}-annual",
                tier=account.tier,
                mrr=str(account.seats * PRICE_PER_SEAT[account.tier]),
                currency="USD",
                seats_purchased=account.seats,
                renewal_date=(self.start + timedelta(days=365)).date().isoformat(),
            )

    def usage(self, day: int, h: float, k: float) -> int:
        """Sessions and feature use as healthy as `h`, weekly counts; returns the users."""
        rng, seats = self.rng, self.account.seats
        users = max(1, round(seats * h * rng.uniform(0.7, 1.0)))
        for _ in range(_poisson(rng, k * (0.5 + 3 * h))):
            self.emit(
                "session_started",
                user_id=f"u{rng.randrange(users)}",
                duration_seconds=rng.randint(60, 3600),
            )
        for _ in range(_poisson(rng, k * 1.5 * h)):
            self.emit(
                "feature_used",
                user_id=f"u{rng.randrange(users)}",
                feature=rng.choice(FEATURES),
                count=rng.randint(1, 5),
            )
        if day % 7 == 0:
            self.emit("active_users_reported", active_users=users)
            self.emit(
                "seats_used_reported",
                seats_in_use=min(seats, max(1, round(seats * (h + 0.1)))),
            )
        return users

    def support(self, day: int, h: float, k: float) -> None:
        """Now and then a ticket, the less healthy the likelier and the worse: opened,
        perhaps escalated, resolved, perhaps rated."""
        rng = self.rng
        if rng.random() >= k * (0.03 + 0.25 * (1 - h) ** 2):
            return
        ticket = f"{self.account.account_id}-t{day}"
        bad = rng.random() > h
        priority = rng.choice(("high", "urgent") if bad else ("low", "normal"))
        last = self.emit(
            "ticket_opened",
            ticket_id=ticket,
            priority=priority,
            subject="Problem" if bad else "Question",
            text=rng.choice(BAD_TEXT if bad else GOOD_TEXT),
        )
        if bad and rng.random() < 0.5:
            last = self.emit(
                "ticket_updated",
                not_before=last,
                ticket_id=ticket,
                priority="urgent",
                escalated=True,
                text="Escalating: still not fixed.",
            )
        last = self.emit(
            "ticket_resolved",
            not_before=last,
            ticket_id=ticket,
            resolution_hours=round(rng.uniform(1, 24 if not bad else 120), 1),
        )
        if rng.random() < 0.4:
            self.emit(
                "csat_submitted",
                not_before=last,
                ticket_id=ticket,
                rating=min(5, max(1, round(1 + 4 * h + rng.gauss(0, 0.7)))),
                comment=rng.choice(BAD_TEXT if bad else GOOD_TEXT),
            )

    def survey(self, h: float, k: float, users: int) -> None:
        rng = self.rng
        if rng.random() < k * 0.01:
            self.emit(
                "nps_submitted",
                user_id=f"u{rng.randrange(users)}",
                score=min(10, max(0, round(10 * h + rng.gauss(0, 1.5)))),
                comment=rng.choice(BAD_TEXT if h < 0.5 else GOOD_TEXT),
            )

    def invoice(self, day: int, h: float) -> None:
        """The month's invoice: paid (late as health is low), or failed and overdue."""
        rng, account = self.rng, self.account
        amount = str(account.seats * PRICE_PER_SEAT[account.tier])
        invoice = f"{account.account_id}-inv{day // 30}"
        if h < 0.35 and rng.random() < 0.6:
            self.emit(
                "payment_failed",
                invoice_id=invoice,
                amount=amount,
                currency="USD",
                reason="card_declined",
            )
            self.emit(
                "invoice_overdue",
                invoice_id=invoice,
                amount=amount,
                currency="USD",
                days_overdue=rng.randint(5, 45),
            )
        else:
            self.emit(
                "invoice_paid",
                invoice_id=invoice,
                amount=amount,
                currency="USD",
                days_late=max(0, round(rng.gauss((1 - h) * 15, 3))),
            )


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, 1.0
    while True:
        p *= rng.random()
        if p <= limit:
            return k
        k += 1


def malformed(rng: random.Random, event: dict[str, Any]) -> bytes:
    """A broken variant of `event`, as a misbehaving source system would send it."""
    import orjson

    variant = rng.randrange(8)
    if variant == 0:
        return orjson.dumps(event)[:-7]  # truncated JSON
    if variant == 1:
        return b"\xff\xfe" + orjson.dumps(event)  # not UTF-8
    if variant == 2:
        return orjson.dumps({k: v for k, v in event.items() if k != "account_id"})
    if variant == 3:
        return orjson.dumps({**event, "type": "mystery_event"})
    if variant == 4:
        return orjson.dumps({**event, "schema_version": 99})
    if variant == 5:
        return orjson.dumps({**event, "occurred_at": "2999-01-01T00:00:00+00:00"})
    if variant == 6:
        return orjson.dumps({**event, "occurred_at": "yesterday"})
    return b"[1, 2, 3]"
