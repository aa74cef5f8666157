"""Webhooks end to end: the real scorer's change events, through the real broker, fanned out
by `healthscore notify` to real HTTP receivers in this test, which verify every signature with
the `standardwebhooks` package (the specification's own). One receiver fails the first two
attempts of each event, one is down at first, one is never reachable, one says it is gone."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import pytest
import standardwebhooks
import uvicorn
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from healthscore.devstack import free_port
from services.api.app import create_app
from services.api.auth import hash_token
from services.notify.serve import serve
from shared.config import ApiToken, Settings
from shared.kafka import read_all
from tests.support.kafka_io import produce
from tests.support.signals import (
    MODEL,
    produce_signals,
    running_scorer,
    simulated_signals,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

ADMIN, READER = "webhook-admin-token", "webhook-reader-token"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@dataclass
class Receiver:
    """An HTTP server that keeps every request it is sent. `fail_first` attempts of each
    webhook-id are answered 500; `status` answers the rest."""

    port: int = field(default_factory=free_port)
    fail_first: int = 0
    status: int = 204
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    tries: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def hook(self, request: Request) -> Response:
        headers = dict(request.headers)
        self.requests.append((headers, await request.body()))
        self.tries[headers["webhook-id"]] += 1
        if self.tries[headers["webhook-id"]] <= self.fail_first:
            return Response("not now", status_code=500)
        return Response(status_code=self.status)

    def verified(self, secret: str) -> dict[str, Any]:
        """webhook-id -> the payload of its delivered attempt, each signature verified (the
        attempts answered 500 and their signatures too)."""
        check = standardwebhooks.Webhook(secret)
        delivered: dict[str, Any] = {}
        for headers, body in self.requests:
            payload = check.verify(body, headers)  # raises on a bad signature or timestamp
            delivered[headers["webhook-id"]] = (headers, payload)
        return delivered

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[Receiver]:
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        )
        task = asyncio.create_task(server.serve())
        while not server.started:
            assert not task.done(), "the receiver exited while starting"
            await asyncio.sleep(0.02)
        try:
            yield self
        finally:
            server.should_exit = True
            await task


def notify_settings(settings: Settings) -> Settings:
    tokens = [
        ApiToken(name="ops@example.com", sha256=hash_token(ADMIN), scopes=["read", "admin"]),
        ApiToken(name="reader", sha256=hash_token(READER), scopes=["read", "write"]),
    ]
    return settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"tokens": tokens}),
            "notify": settings.notify.model_copy(
                update={
                    "retry_seconds": [0.2, 0.3, 0.5, 0.5, 1.0, 1.0],
                    "metrics_port": free_port(),
                    "poll_seconds": 0.1,
                }
            ),
            "scorer": settings.scorer.model_copy(update={"replay_hold_seconds": 1}),
        }
    )


@contextlib.asynccontextmanager
async def notifying(settings: Settings, registry: CollectorRegistry) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(serve(settings, stop, registry=registry))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)


async def until(what: str, done: Any, expected: int, timeout: float = 60) -> None:
    """Until `done()` (a count) reaches `expected`; says how far it got if it does not."""
    deadline = time.monotonic() + timeout
    while (got := done()) < expected:
        assert time.monotonic() < deadline, f"{what}: {got} of {expected} within {timeout:.0f} s"
        await asyncio.sleep(0.1)


@dataclass
class Subscribers:
    """The receivers and their subscriptions: every change; binary, to healthy only, failing
    twice first; churn risk, down at first; never reachable; expansion, answering 410."""

    steady: Receiver = field(default_factory=Receiver)
    flaky: Receiver = field(default_factory=lambda: Receiver(fail_first=2))
    late: Receiver = field(default_factory=Receiver)
    unreachable: Receiver = field(default_factory=Receiver)
    gone: Receiver = field(default_factory=lambda: Receiver(status=410))
    every: dict[str, Any] = field(default_factory=dict)
    to_healthy: dict[str, Any] = field(default_factory=dict)
    downtime: dict[str, Any] = field(default_factory=dict)
    dead: dict[str, Any] = field(default_factory=dict)
    leaving: dict[str, Any] = field(default_factory=dict)


@dataclass
class Published:
    """The change events the scorer published, by id, and the ids each subscription wants."""

    events: dict[str, dict[str, Any]]

    @property
    def churn(self) -> set[str]:
        return {i for i, e in self.events.items() if e["data"]["objective"] == "churn_risk"}

    @property
    def healthy(self) -> set[str]:
        return {i for i, e in self.events.items() if e["data"]["new_band"] == "healthy"}

    @property
    def expansion(self) -> set[str]:
        return set(self.events) - self.churn


async def test_change_events_reach_receivers_signed_through_failures_and_downtime(
    settings: Settings, engine: AsyncEngine
) -> None:
    settings = notify_settings(settings)
    app = create_app(settings)
    to = Subscribers()
    registry = CollectorRegistry()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
        to.steady.serving(),
        to.flaky.serving(),
        to.gone.serving(),
    ):
        await subscriptions_take_the_admin_scope_and_show_their_secret_once(api, to)
        async with notifying(settings, registry), running_scorer(settings, engine) as scorer:
            published = await the_scorer_publishes_changes(settings, engine, scorer)
            await each_receiver_gets_what_it_subscribed_to_through_failures(to, published)
            await the_unreachable_one_is_dead_lettered_and_the_gone_one_disabled(api, to, published)
            await a_dead_delivery_is_sent_again_and_a_subscription_paused(api, to, published)
        every_request_was_signed_and_carried_the_event_as_published(to, published)
        await the_counts_and_metrics_agree_and_a_subscription_is_deleted(
            api, to, published, registry
        )


async def subscriptions_take_the_admin_scope_and_show_their_secret_once(
    api: httpx.AsyncClient, to: Subscribers
) -> None:
    refused = await api.post(
        "/v1/webhooks", json={"url": to.steady.url}, headers={"Authorization": f"Bearer {READER}"}
    )
    assert refused.status_code == 403
    invalid = await api.post("/v1/webhooks", json={"url": "ftp://x"}, headers=AUTH)
    assert invalid.status_code == 422
    assert invalid.headers["content-type"] == "application/problem+json"

    async def subscribe(receiver: Receiver, **options: Any) -> dict[str, Any]:
        answer = await api.post("/v1/webhooks", json={"url": receiver.url, **options}, headers=AUTH)
        assert answer.status_code == 201, answer.text
        body: dict[str, Any] = answer.json()
        assert body["secret"].startswith("whsec_") and body["created_by"] == "ops@example.com"
        return body

    to.every = await subscribe(to.steady, description="all changes")
    to.to_healthy = await subscribe(to.flaky, mode="binary", to_bands=["healthy"])
    to.downtime = await subscribe(to.late, objectives=["churn_risk"])
    to.dead = await subscribe(to.unreachable)
    to.leaving = await subscribe(to.gone, objectives=["expansion"])
    listed = (await api.get("/v1/webhooks", headers=AUTH)).json()["items"]
    assert [w["webhook_id"] for w in listed] == [
        w["webhook_id"] for w in (to.every, to.to_healthy, to.downtime, to.dead, to.leaving)
    ]
    assert all("secret" not in w for w in listed)


async def the_scorer_publishes_changes(
    settings: Settings, engine: AsyncEngine, scorer: Any
) -> Published:
    """Simulated accounts scored; a record on the changes topic that is no change event is
    counted and passed over."""
    await produce(settings, settings.kafka.topics.changes, [(b"acc-x", b"[not, an event]")])
    total = await produce_signals(settings, simulated_signals(40, 45, seed=11))
    await wait_consumed(engine, settings, total)
    await asyncio.sleep(1.5)
    await scorer.sweep()  # sends the changes held while catching up on the past
    async with engine.connect() as conn:
        for _ in range(100):
            if not await conn.scalar(text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")):
                break
            await conn.rollback()
            await asyncio.sleep(0.1)
    records = await read_all(settings.kafka, settings.kafka.topics.changes)
    # the record that is no change event left out
    events = {e["id"]: e for e in (orjson.loads(r.value) for r in records if r.key != b"acc-x")}
    published = Published(events)
    assert len(events) >= 10, "too few change events to test with"
    assert published.healthy and published.expansion
    return published


async def each_receiver_gets_what_it_subscribed_to_through_failures(
    to: Subscribers, published: Published
) -> None:
    everything = len(published.events)
    await until("delivered to the steady receiver", lambda: len(to.steady.tries), everything)
    await until(
        "delivered to the receiver that fails twice first",
        lambda: sum(n >= 3 for n in to.flaky.tries.values()),
        len(published.healthy),
    )
    # the one down so far comes up: what waited for it arrives
    async with to.late.serving():
        await until("delivered after downtime", lambda: len(to.late.tries), len(published.churn))


async def the_unreachable_one_is_dead_lettered_and_the_gone_one_disabled(
    api: httpx.AsyncClient, to: Subscribers, published: Published
) -> None:
    """The dead deliveries read in pages, newest first, each once."""
    deliveries = f"/v1/webhooks/{to.dead['webhook_id']}/deliveries"

    async def dead_count() -> int:
        page = await api.get(deliveries, params={"status": "dead", "limit": 500}, headers=AUTH)
        return len(page.json()["items"])

    deadline = time.monotonic() + 60
    while (n := await dead_count()) < len(published.events):
        assert time.monotonic() < deadline, f"dead-lettered {n} of {len(published.events)}"
        await asyncio.sleep(0.2)
    paged, cursor = [], None
    while True:
        params = {"status": "dead", "limit": 7, **({"cursor": cursor} if cursor else {})}
        page = (await api.get(deliveries, params=params, headers=AUTH)).json()
        paged += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert sorted(d["event_id"] for d in paged) == sorted(published.events)
    assert all(d["last_error"].startswith("ConnectError") for d in paged)
    assert [d["created_at"] for d in paged] == sorted(
        (d["created_at"] for d in paged), reverse=True
    )
    gone_now = (await api.get(f"/v1/webhooks/{to.leaving['webhook_id']}", headers=AUTH)).json()
    assert gone_now["enabled"] is False
    assert gone_now["disabled_reason"] == "the receiver answered 410 Gone"


async def a_dead_delivery_is_sent_again_and_a_subscription_paused(
    api: httpx.AsyncClient, to: Subscribers, published: Published
) -> None:
    """The unreachable receiver comes up at last: a dead delivery is sent again on request."""
    some = sorted(published.events)[0]
    async with to.unreachable.serving():
        again = await api.post(
            f"/v1/webhooks/{to.dead['webhook_id']}/deliveries/{some}/retry", headers=AUTH
        )
        assert again.status_code == 202 and again.json()["status"] == "pending"
        await until("the retried delivery", lambda: len(to.unreachable.tries), 1)
    assert set(to.unreachable.verified(to.dead["secret"])) == {some}
    every = f"/v1/webhooks/{to.every['webhook_id']}"
    # `types` null: left as it is
    paused = await api.patch(every, json={"enabled": False, "types": None}, headers=AUTH)
    assert paused.status_code == 200, paused.text
    assert paused.json()["disabled_reason"] == "disabled by ops@example.com"
    resumed = await api.patch(every, json={"enabled": True}, headers=AUTH)
    assert resumed.json()["enabled"] and resumed.json()["disabled_reason"] is None


def every_request_was_signed_and_carried_the_event_as_published(
    to: Subscribers, published: Published
) -> None:
    events = published.events
    received = to.steady.verified(to.every["secret"])
    assert set(received) == set(events)
    for event_id, (headers, payload) in received.items():
        assert headers["content-type"] == "application/cloudevents+json"
        assert payload == events[event_id]
    assert set(to.late.verified(to.downtime["secret"])) == published.churn
    binary = to.flaky.verified(to.to_healthy["secret"])
    assert set(binary) == published.healthy
    for event_id, (headers, data) in binary.items():
        # binary mode: attributes as headers, the data as the body, its text for people
        assert headers["ce-id"] == event_id and headers["ce-type"] == events[event_id]["type"]
        assert data == events[event_id]["data"]
        assert data["account_id"] in data["text"] and "healthy" in data["text"]
    assert set(to.gone.tries) <= published.expansion and len(to.gone.tries) >= 1
    advice = {f.advice for f in MODEL.factors.values()}
    assert all(
        e["data"]["next_action"] is None or e["data"]["next_action"]["advice"] in advice
        for e in events.values()
    )


async def the_counts_and_metrics_agree_and_a_subscription_is_deleted(
    api: httpx.AsyncClient, to: Subscribers, published: Published, registry: CollectorRegistry
) -> None:
    dead = f"/v1/webhooks/{to.dead['webhook_id']}"
    detail = (await api.get(dead, headers=AUTH)).json()
    assert detail["deliveries"] == {"dead": len(published.events) - 1, "delivered": 1}
    attempts = registry.get_sample_value("healthscore_webhook_attempts_total", {"result": "dead"})
    assert attempts == len(published.events)
    assert registry.get_sample_value("healthscore_notify_unreadable_events_total") == 1
    assert (await api.delete(dead, headers=AUTH)).status_code == 204
    assert (await api.get(dead, headers=AUTH)).status_code == 404
