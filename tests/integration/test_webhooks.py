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


async def test_change_events_reach_receivers_signed_through_failures_and_downtime(
    settings: Settings, engine: AsyncEngine
) -> None:
    settings = notify_settings(settings)
    app = create_app(settings)
    steady, flaky, late, gone = Receiver(), Receiver(fail_first=2), Receiver(), Receiver(status=410)
    unreachable = Receiver()  # never served
    registry = CollectorRegistry()
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
        steady.serving(),
        flaky.serving(),
        gone.serving(),
    ):
        # subscriptions need the admin scope; each answer shows its secret once
        refused = await api.post(
            "/v1/webhooks", json={"url": steady.url}, headers={"Authorization": f"Bearer {READER}"}
        )
        assert refused.status_code == 403
        invalid = await api.post("/v1/webhooks", json={"url": "ftp://x"}, headers=AUTH)
        assert invalid.status_code == 422
        assert invalid.headers["content-type"] == "application/problem+json"

        async def subscribe(receiver: Receiver, **options: Any) -> dict[str, Any]:
            answer = await api.post(
                "/v1/webhooks", json={"url": receiver.url, **options}, headers=AUTH
            )
            assert answer.status_code == 201, answer.text
            body: dict[str, Any] = answer.json()
            assert body["secret"].startswith("whsec_") and body["created_by"] == "ops@example.com"
            return body

        every = await subscribe(steady, description="all changes")
        to_healthy = await subscribe(flaky, mode="binary", to_bands=["healthy"])
        downtime = await subscribe(late, objectives=["churn_risk"])
        dead = await subscribe(unreachable)
        leaving = await subscribe(gone, objectives=["expansion"])
        listed = (await api.get("/v1/webhooks", headers=AUTH)).json()["items"]
        assert [w["webhook_id"] for w in listed] == [
            w["webhook_id"] for w in (every, to_healthy, downtime, dead, leaving)
        ]
        assert all("secret" not in w for w in listed)

        # a record on the changes topic that is no change event is counted and passed over
        await produce(settings, settings.kafka.topics.changes, [(b"acc-x", b"[not, an event]")])
        signals = simulated_signals(40, 45, seed=11)
        total = await produce_signals(settings, signals)
        async with notifying(settings, registry), running_scorer(settings, engine) as scorer:
            await wait_consumed(engine, settings, total)
            await asyncio.sleep(1.5)
            await scorer.sweep()  # sends the changes held while catching up on the past
            async with engine.connect() as conn:
                for _ in range(100):
                    if not await conn.scalar(
                        text("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
                    ):
                        break
                    await conn.rollback()
                    await asyncio.sleep(0.1)
            published = [
                orjson.loads(r.value)
                for r in await read_all(settings.kafka, settings.kafka.topics.changes)
                if r.key != b"acc-x"  # the record that is no change event
            ]
            events = {e["id"]: e for e in published}
            assert len(events) >= 10, "too few change events to test with"
            churn = {i for i, e in events.items() if e["data"]["objective"] == "churn_risk"}
            healthy = {i for i, e in events.items() if e["data"]["new_band"] == "healthy"}
            expansion = set(events) - churn
            assert healthy and expansion

            await until("delivered to the steady receiver", lambda: len(steady.tries), len(events))
            await until(
                "delivered to the receiver that fails twice first",
                lambda: sum(n >= 3 for n in flaky.tries.values()),
                len(healthy),
            )
            # the one down so far comes up: what waited for it arrives
            async with late.serving():
                await until("delivered after downtime", lambda: len(late.tries), len(churn))

            async def dead_count() -> int:
                page = await api.get(
                    f"/v1/webhooks/{dead['webhook_id']}/deliveries",
                    params={"status": "dead", "limit": 500},
                    headers=AUTH,
                )
                return len(page.json()["items"])

            deadline = time.monotonic() + 60
            while (n := await dead_count()) < len(events):
                assert time.monotonic() < deadline, f"dead-lettered {n} of {len(events)}"
                await asyncio.sleep(0.2)
            paged, cursor = [], None  # in pages, newest first, each once
            while True:
                params = {"status": "dead", "limit": 7, **({"cursor": cursor} if cursor else {})}
                page = (
                    await api.get(
                        f"/v1/webhooks/{dead['webhook_id']}/deliveries", params=params, headers=AUTH
                    )
                ).json()
                paged += page["items"]
                if not (cursor := page["next_cursor"]):
                    break
            assert sorted(d["event_id"] for d in paged) == sorted(events)
            assert all(d["last_error"].startswith("ConnectError") for d in paged)
            assert [d["created_at"] for d in paged] == sorted(
                (d["created_at"] for d in paged), reverse=True
            )
            gone_now = (await api.get(f"/v1/webhooks/{leaving['webhook_id']}", headers=AUTH)).json()
            assert gone_now["enabled"] is False
            assert gone_now["disabled_reason"] == "the receiver answered 410 Gone"

            # the unreachable one comes up at last: a dead delivery is sent again on request
            some = sorted(events)[0]
            async with unreachable.serving():
                again = await api.post(
                    f"/v1/webhooks/{dead['webhook_id']}/deliveries/{some}/retry", headers=AUTH
                )
                assert again.status_code == 202 and again.json()["status"] == "pending"
                await until("the retried delivery", lambda: len(unreachable.tries), 1)
            assert set(unreachable.verified(dead["secret"])) == {some}
            # a subscription is disabled and enabled again
            paused = await api.patch(
                f"/v1/webhooks/{every['webhook_id']}",
                json={"enabled": False, "types": None},  # null: left as it is
                headers=AUTH,
            )
            assert paused.status_code == 200, paused.text
            assert paused.json()["disabled_reason"] == "disabled by ops@example.com"
            resumed = await api.patch(
                f"/v1/webhooks/{every['webhook_id']}", json={"enabled": True}, headers=AUTH
            )
            assert resumed.json()["enabled"] and resumed.json()["disabled_reason"] is None

        # every request carried a valid signature; each event arrived as it was published
        received = steady.verified(every["secret"])
        assert set(received) == set(events)
        for event_id, (headers, payload) in received.items():
            assert headers["content-type"] == "application/cloudevents+json"
            assert payload == events[event_id]
        assert set(late.verified(downtime["secret"])) == churn
        binary = flaky.verified(to_healthy["secret"])
        assert set(binary) == healthy
        for event_id, (headers, data) in binary.items():
            # binary mode: attributes as headers, the data as the body, its text for people
            assert headers["ce-id"] == event_id and headers["ce-type"] == events[event_id]["type"]
            assert data == events[event_id]["data"]
            assert data["account_id"] in data["text"] and "healthy" in data["text"]
        assert set(gone.tries) <= expansion and len(gone.tries) >= 1
        advice = {f.advice for f in MODEL.factors.values()}
        assert all(
            e["data"]["next_action"] is None or e["data"]["next_action"]["advice"] in advice
            for e in events.values()
        )

        detail = (await api.get(f"/v1/webhooks/{dead['webhook_id']}", headers=AUTH)).json()
        assert detail["deliveries"] == {"dead": len(events) - 1, "delivered": 1}
        attempts = registry.get_sample_value(
            "healthscore_webhook_attempts_total", {"result": "dead"}
        )
        assert attempts == len(events)
        assert registry.get_sample_value("healthscore_notify_unreadable_events_total") == 1
        assert (
            await api.delete(f"/v1/webhooks/{dead['webhook_id']}", headers=AUTH)
        ).status_code == 204
        assert (
            await api.get(f"/v1/webhooks/{dead['webhook_id']}", headers=AUTH)
        ).status_code == 404
