"""Stripe events, as webhooks deliver them (`{"object": "event", "type": ..., "data":
{"object": ...}}`). The Stripe event id is the event id, so Stripe's redeliveries of one event
are dropped by the scorer's de-duplication; amounts stay in the currency's minor units.

- invoice.paid -> invoice_paid (days late: from due_date to status_transitions.paid_at)
- invoice.payment_failed -> payment_failed; invoice.overdue -> invoice_overdue
- customer.subscription.created / updated -> subscription_created / subscription_changed (MRR
  from the items' prices and quantities, per month; seats: the quantities; tier: the `tier`
  metadata of the subscription, price or product)
- customer.subscription.deleted -> subscription_cancelled
- customer.created / updated -> account_profile_updated with its `owner` and
  `parent_account_id` metadata (skipped when it has neither)
- charge.refunded -> refund_issued (the newest refund: a charge's refunds add up)
- charge.dispute.created -> payment_disputed

Every other event type is read for links only. The account is the Stripe customer id, or with
`account_metadata_key` that key of the object's (or its expanded customer's) metadata. A dispute
names only its charge: its account is the one the charge's invoice or charge events named.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from shared.events import MINOR_UNIT_DIGITS, major_units
from shared.sources.base import (
    NOT_SCORED,
    Link,
    Piece,
    Translation,
    envelope,
    epoch,
    iso,
    key,
    members,
    rejected,
    skipped,
    text,
)

CHARGE: Final = "stripe:charge"
PAYMENT: Final = "stripe:payment_intent"
_PER_MONTH: Final[dict[str, Decimal]] = {  # billing intervals per month
    "day": Decimal(365) / 12,
    "week": Decimal(52) / 12,
    "month": Decimal(1),
    "year": Decimal(1) / 12,
}


def _minor(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _NotMinorUnits(Exception):
    """An amount that is not an integer of the currency's minor unit, as Stripe sends them."""

    def __init__(self, path: str) -> None:
        self.path = path


class StripeFormat:
    name = "stripe"

    def __init__(
        self, *, account_metadata_key: str | None = None, tier_metadata_key: str = "tier"
    ) -> None:
        self.account_key, self.tier_key = account_metadata_key, tier_metadata_key

    def _account(self, obj: dict[str, Any]) -> tuple[str | None, str]:
        customer = obj.get("customer")
        if obj.get("object") == "customer":
            customer = obj
        if self.account_key is None:
            if isinstance(customer, dict):
                return key(customer.get("id")), "data.object.customer.id"
            return key(customer), "data.object.customer"
        for where, holder in (("data.object", obj), ("data.object.customer", members(customer))):
            found = key(members(holder.get("metadata")).get(self.account_key))
            if found is not None:
                return found, f"{where}.metadata.{self.account_key}"
        return None, f"data.object.metadata.{self.account_key}"

    def translate(self, record: dict[str, Any], raw: bytes) -> Translation:
        kind, data = record.get("type"), record.get("data")
        if (
            record.get("object") != "event"
            or not isinstance(kind, str)
            or not isinstance(data, dict)
        ):
            detail = "not a Stripe event object (object: event, type, data.object)"
            return Translation([rejected(raw, "schema_violation", detail, "object")])
        obj = members(data.get("object"))
        created = record.get("created")
        seconds = epoch(created)
        at = iso(seconds) if seconds is not None else created
        account, account_path = self._account(obj)
        links = _links(obj, account, seconds)
        paths = {"event_id": "id", "occurred_at": "created", "account_id": account_path}
        try:
            fields = _fields(kind, obj, created, self.tier_key)
        except _NotMinorUnits as refused:
            detail = f"{refused.path} must be an integer of minor units"
            return Translation([rejected(raw, "schema_violation", detail, refused.path)], links)
        if fields is None:
            return Translation([skipped(raw, NOT_SCORED)], links)
        paths.update(fields.pop("_paths", {}))
        event = {**envelope(fields.pop("type"), record.get("id"), account, at), **fields}
        piece = Piece(raw, event, paths=paths)
        if account is None and kind.startswith("charge.dispute."):
            charge = key(obj.get("charge"))
            if charge is not None:
                piece.needs = (CHARGE, charge)
                piece.paths["account_id"] = "data.object.charge"
            elif (intent := key(obj.get("payment_intent"))) is not None:
                piece.needs = (PAYMENT, intent)
                piece.paths["account_id"] = "data.object.payment_intent"
        if account is None and piece.needs is None:
            detail = (
                "the event names no customer"
                if self.account_key is None
                else (f"no metadata key {self.account_key!r} on the object or its customer")
            )
            return Translation([rejected(raw, "unattributed", detail, account_path)], links)
        return Translation([piece], links)


def _links(obj: dict[str, Any], account: str | None, at: float | None) -> list[Link]:
    """The charge and payment intent this object ties to its account: a dispute names only
    them, and finds its account through these links."""
    if account is None or at is None:
        return []
    keys = []
    if obj.get("object") == "charge" and (charge := key(obj.get("id"))) is not None:
        keys.append((CHARGE, charge))
    for field, namespace in (("charge", CHARGE), ("payment_intent", PAYMENT)):
        if (found := key(obj.get(field))) is not None:
            keys.append((namespace, found))
    return [Link(k, account, at) for k in keys]


def _fields(kind: str, obj: dict[str, Any], created: Any, tier_key: str) -> dict[str, Any] | None:
    """The v1 event's fields of a Stripe event of type `kind` (None: a type not scored)."""
    currency = obj.get("currency")
    cur = currency.upper() if isinstance(currency, str) else "USD"

    def money(minor: Any, path: str) -> dict[str, Any]:
        paths = {"amount": path, "currency": "data.object.currency"}
        if _minor(minor) is None:  # Stripe sends integers of the minor unit, always
            raise _NotMinorUnits(path)
        return {"amount": major_units(minor, cur), "currency": currency, "_paths": paths}

    if kind == "invoice.paid":
        out = {
            "type": "invoice_paid",
            "invoice_id": obj.get("id"),
            **money(obj.get("amount_paid"), "data.object.amount_paid"),
        }
        paid = members(obj.get("status_transitions")).get("paid_at")
        due = obj.get("due_date")
        if isinstance(paid, int) and isinstance(due, int):
            out["days_late"] = max(0, (paid - due) // 86_400)
        return out
    if kind == "invoice.payment_failed":
        return {
            "type": "payment_failed",
            "invoice_id": obj.get("id"),
            **money(obj.get("amount_due"), "data.object.amount_due"),
        }
    if kind == "invoice.overdue":
        due = obj.get("due_date")
        overdue = (
            (created - due) // 86_400
            if _minor(due) is not None and _minor(created) is not None
            else 0
        )
        return {
            "type": "invoice_overdue",
            "invoice_id": obj.get("id"),
            "days_overdue": max(0, overdue),
            **money(obj.get("amount_remaining"), "data.object.amount_remaining"),
        }
    if kind in ("customer.subscription.created", "customer.subscription.updated"):
        return _subscription(kind, obj, tier_key)
    if kind in ("customer.created", "customer.updated"):
        return _owner(obj)
    if kind == "customer.subscription.deleted":
        details = members(obj.get("cancellation_details"))
        ended = obj.get("ended_at") or obj.get("canceled_at")
        out = {
            "type": "subscription_cancelled",
            "reason": text(details.get("reason") or details.get("feedback"), 500),
        }
        if (ended_at := epoch(ended)) is not None:
            out["effective_at"] = iso(ended_at)
        return out
    if kind == "charge.refunded":
        refunds = members(obj.get("refunds")).get("data")
        newest = (
            refunds[0]
            if isinstance(refunds, list) and refunds and isinstance(refunds[0], dict)
            else {}
        )
        if _minor(newest.get("amount")) is not None:
            return {
                "type": "refund_issued",
                "reason": text(newest.get("reason"), 500),
                **money(newest["amount"], "data.object.refunds.data[0].amount"),
            }
        return {
            "type": "refund_issued",
            **money(obj.get("amount_refunded"), "data.object.amount_refunded"),
        }
    if kind == "charge.dispute.created":
        return {
            "type": "payment_disputed",
            "reason": text(obj.get("reason"), 500),
            **money(obj.get("amount"), "data.object.amount"),
        }
    return None


def _owner(customer: dict[str, Any]) -> dict[str, Any] | None:
    """Whose the account is, from the customer's `owner` and `parent_account_id` metadata (None:
    it names neither)."""
    metadata = members(customer.get("metadata"))
    owner, parent = metadata.get("owner"), key(metadata.get("parent_account_id"))
    fields: dict[str, Any] = {"type": "account_profile_updated"}
    if isinstance(owner, str) and owner.strip():
        fields["owner"] = text(owner.strip(), 200)
    if parent is not None:
        fields["parent_account_id"] = parent
    return fields if len(fields) > 1 else None


def _subscription(kind: str, obj: dict[str, Any], tier_key: str) -> dict[str, Any]:
    items = members(obj.get("items")).get("data")
    items = [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []
    monthly, seats, currency, plan, tier = Decimal(0), 0, obj.get("currency"), None, None
    period_end = obj.get("current_period_end")
    for item in items:
        price = members(item.get("price")) or members(item.get("plan"))
        quantity = _minor(item.get("quantity"))
        quantity = 1 if quantity is None else quantity
        seats += quantity
        currency = currency or price.get("currency")
        plan = plan or price.get("nickname") or price.get("lookup_key") or price.get("id")
        product = members(price.get("product"))
        tier = (
            tier
            or members(price.get("metadata")).get(tier_key)
            or members(product.get("metadata")).get(tier_key)
        )
        period_end = period_end or item.get("current_period_end")
        recurring = members(price.get("recurring")) or price
        interval = recurring.get("interval")
        count = _minor(recurring.get("interval_count")) or 1
        unit = price.get("unit_amount_decimal") or price.get("unit_amount") or price.get("amount")
        try:
            months = _PER_MONTH[str(interval)]
            per_month = Decimal(str(unit)) * quantity * months / count
        except (InvalidOperation, KeyError, TypeError):
            continue
        monthly += per_month
    tier = members(obj.get("metadata")).get(tier_key) or tier
    cur = currency.upper() if isinstance(currency, str) else "USD"
    mrr = monthly.scaleb(-MINOR_UNIT_DIGITS.get(cur, 2)).quantize(Decimal("0.0001"))
    out: dict[str, Any] = {
        "type": "subscription_created" if kind.endswith("created") else "subscription_changed",
        "plan": text(plan, 64) or "stripe",
        "mrr": mrr,
        "currency": currency,
        "seats_purchased": seats,
        "_paths": {
            "mrr": "data.object.items.data",
            "seats_purchased": "data.object.items.data",
            "plan": "data.object.items.data[0].price",
        },
    }
    if isinstance(tier, str) and tier.strip().lower() in {
        "free",
        "starter",
        "growth",
        "enterprise",
    }:
        out["tier"] = tier
    if (renews := epoch(period_end)) is not None:
        out["renewal_date"] = datetime.fromtimestamp(renews, UTC).date().isoformat()
    return out
