"""The REST API against a real PostgreSQL holding what the real scorer code wrote."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app
from services.api.auth import hash_token
from services.api.schemas import AccountHealthResponse
from services.scorer import portfolio
from services.simulator.world import OWNERS
from shared.config import ApiToken, Settings
from shared.db import NOTIFY_CHANGED
from tests.support.pipeline import wait_for
from tests.support.samples import valid_events
from tests.support.signals import MODEL, score_and_store, seed, signal_of, simulated_signals

pytestmark = pytest.mark.asyncio(loop_scope="session")

READ, WRITE, BOTH, CSM = "reader-token", "writer-token", "admin-token", "csm-token"
AUTH = {"Authorization": f"Bearer {BOTH}"}


def api_settings(settings: Settings) -> Settings:
    tokens = [
        ApiToken(name="reader", sha256=hash_token(READ), scopes=["read"]),
        ApiToken(name="writer", sha256=hash_token(WRITE), scopes=["write"]),
        ApiToken(name="admin@example.com", sha256=hash_token(BOTH), scopes=["read", "write"]),
        ApiToken(name=OWNERS[1], sha256=hash_token(CSM), scopes=["read"]),  # a CSM
    ]
    return settings.model_copy(
        update={
            "api": settings.api.model_copy(
                update={"tokens": tokens, "max_page_size": 25, "max_body_bytes": 2048}
            )
        }
    )


@contextlib.asynccontextmanager
async def client_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(api_settings(settings))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            yield client


@pytest.fixture
async def api(
    settings: Settings, engine: AsyncEngine
) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    accounts = await seed(settings, engine)
    async with client_for(settings) as client:
        yield client, accounts


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["status"] == status and body["title"] and body["type"].startswith("https://")
    return body


async def test_health_has_every_objective_with_its_explanation(api) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    response = await client.get(f"/v1/accounts/{accounts[0]}/health", headers=AUTH)
    assert response.status_code == 200
    body = response.json()
    assert body["account_id"] == accounts[0]
    assert {o["objective"] for o in body["objectives"]} == {"churn_risk", "expansion"}
    assert set(body["freshness"]) == {"usage", "support", "billing"}
    for objective in body["objectives"]:
        assert objective["model_version"] == MODEL.version
        assert objective["band"] in {
            "at_risk",
            "neutral",
            "healthy",
            "not_ready",
            "developing",
            "ready",
        }
        ok = [f for f in objective["factors"] if f["status"] == "ok"]
        assert sum(f["contribution"] for f in ok) == pytest.approx(
            objective["weighted_score"], abs=1e-3
        )
        # what would help: factors with data below their best, largest gain first, advised
        points = [a["points"] for a in objective["actions"]]
        assert points == sorted(points, reverse=True) and all(p > 0 for p in points)
        subs = {f["factor"]: f["sub_score"] for f in ok}
        for action in objective["actions"]:
            assert action["sub_score"] == subs[action["factor"]] < action["target_sub_score"]
            assert action["advice"] == MODEL.factors[action["factor"]].advice
    assert_problem(await client.get("/v1/accounts/nope/health", headers=AUTH), 404)


async def test_the_stored_health_document_is_exactly_the_response_schema(api) -> None:  # type: ignore[no-untyped-def]
    """What the scorer stored, spliced by PostgreSQL into the answer, validates against the
    response model with no field missing or extra, every time in RFC 3339."""
    client, accounts = api
    for account_id in accounts[:10]:
        response = await client.get(f"/v1/accounts/{account_id}/health", headers=AUTH)
        body = response.json()
        AccountHealthResponse.model_validate(body, extra="forbid")
        times = [body["updated_at"], body["last_event_at"]]
        times += [s["last_data_at"] for s in body["freshness"].values()]
        for objective in body["objectives"]:
            times += [objective["evaluated_at"], objective["changed_at"]]
            times += [f["last_data_at"] for f in objective["factors"]]
        assert all(datetime.fromisoformat(t).tzinfo is not None for t in times if t is not None), (
            times
        )
        assert any(f["last_data_at"] for o in body["objectives"] for f in o["factors"])


async def test_history_pages_newest_first_within_a_range(api) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    url = f"/v1/accounts/{accounts[1]}/health/history"
    everything = (await client.get(url, headers=AUTH, params={"limit": 100})).json()["items"]
    assert len(everything) == 4  # two objectives, scored twice
    assert [i["at"] for i in everything] == sorted((i["at"] for i in everything), reverse=True)
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 1, **({"cursor": cursor} if cursor else {})}
        page = (await client.get(url, headers=AUTH, params=params)).json()
        pages += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert [p["id"] for p in pages] == [i["id"] for i in everything]
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    recent = (
        await client.get(url, headers=AUTH, params={"from": since, "objective": "expansion"})
    ).json()["items"]
    assert len(recent) == 1 and recent[0]["objective"] == "expansion"
    assert recent[0]["cause"] == "signals" and recent[0]["signal_ids"]
    old = (await client.get(url, headers=AUTH, params={"to": since})).json()["items"]
    assert len(old) == 2 and all(i["old_band"] is None for i in old)
    assert_problem(await client.get(url, headers=AUTH, params={"cursor": "garbage!"}), 422)
    assert_problem(await client.get(url, headers=AUTH, params={"cursor": "Zm9vYmFy"}), 400)
    assert_problem(await client.get(url, headers=AUTH, params={"from": "yesterday"}), 422)
    assert_problem(await client.get("/v1/accounts/nope/health/history", headers=AUTH), 404)


async def _every_page(client: httpx.AsyncClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The items of a list, its pages followed by their cursors."""
    items, more = [], {}
    while True:
        page = (await client.get("/v1/accounts", headers=AUTH, params={**params, **more})).json()
        items += page["items"]
        if not page["next_cursor"]:
            return items
        more = {"cursor": page["next_cursor"]}


async def test_lists_filter_sort_and_page(api, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    async with engine.connect() as conn:
        rows = list(
            await conn.execute(
                text(
                    "SELECT s.account_id, s.score, s.band, a.tier, a.industry, a.region,"
                    " a.segment FROM scores s "
                    "JOIN accounts a USING (account_id) WHERE objective = 'churn_risk'"
                )
            )
        )
    listed = (await client.get("/v1/accounts", headers=AUTH, params={"limit": 25})).json()
    assert len(listed["items"]) == 25 and listed["next_cursor"]  # capped at max_page_size
    collected = await _every_page(client, {"limit": 7, "sort": "-score"})
    assert [i["account_id"] for i in collected] == [
        r.account_id for r in sorted(rows, key=lambda r: (r.score, r.account_id), reverse=True)
    ]
    assert len(collected) == len(accounts)
    at_risk = (
        await client.get("/v1/accounts", headers=AUTH, params={"band": "at_risk", "limit": 100})
    ).json()["items"]
    assert {i["account_id"] for i in at_risk} == {r.account_id for r in rows if r.band == "at_risk"}
    tier = rows[0].tier
    by_tier = (
        await client.get("/v1/accounts", headers=AUTH, params={"tier": tier, "limit": 100})
    ).json()["items"]
    assert {i["account_id"] for i in by_tier} == {r.account_id for r in rows if r.tier == tier}
    # the attributes as the accounts table has them (the lists filter on the scores' copy)
    for attributes in (("industry", "region"), ("segment",), ("tier", "industry", "region")):
        for row in rows[:3]:
            params = {a: getattr(row, a) for a in attributes}
            found = {i["account_id"] for i in await _every_page(client, params)}
            assert found == {
                r.account_id for r in rows if all(getattr(r, a) == params[a] for a in params)
            }, params
    ranged = (
        await client.get("/v1/accounts", headers=AUTH, params={"min_score": 40, "max_score": 80})
    ).json()["items"]
    assert all(40 <= i["score"] <= 80 for i in ranged)
    stale = (
        await client.get("/v1/accounts", headers=AUTH, params={"stale_only": True, "limit": 100})
    ).json()["items"]
    assert all(i["stale_sources"] for i in stale)
    expansion = (
        await client.get("/v1/accounts", headers=AUTH, params={"objective": "expansion"})
    ).json()["items"]
    assert expansion and all(i["objective"] == "expansion" for i in expansion)
    wrong_sort = await client.get(
        "/v1/accounts", headers=AUTH, params={"sort": "score", "cursor": listed["next_cursor"]}
    )
    assert wrong_sort.status_code == 200
    mixed = await client.get(
        "/v1/accounts", headers=AUTH, params={"sort": "-change", "cursor": listed["next_cursor"]}
    )
    assert_problem(mixed, 400)
    assert_problem(await client.get("/v1/accounts", headers=AUTH, params={"sort": "bogus"}), 422)
    assert_problem(await client.get("/v1/accounts", headers=AUTH, params={"min_score": 101}), 422)
    # names the model does not know are mistakes worth saying, not empty pages
    for params in (
        {"objective": "happiness"},
        {"band": ["at_risk", "false"]},
        {"objective": "expansion", "band": "at_risk"},  # a churn_risk band
        {"segment": "galactic"},
        {"tier": "platinum"},
    ):
        response = await client.get("/v1/accounts", headers=AUTH, params=params)
        assert_problem(response, 422)
    known = await client.get(
        "/v1/accounts", headers=AUTH, params={"objective": "expansion", "band": "ready"}
    )
    assert known.status_code == 200


async def test_a_list_of_several_bands_is_one_order_whatever_the_bands_are_named(  # type: ignore[no-untyped-def]
    api, engine: AsyncEngine
) -> None:
    """Every order, both directions, pages joined at their cursors, equals SQL's order over
    all bands or the bands asked for, also with a band only another model version names (a
    switch under way)."""
    client, accounts = api
    async with engine.begin() as conn:
        await conn.execute(
            text(
                "UPDATE scores SET band = 'old_band' WHERE account_id = :a"
                " AND objective = 'churn_risk' AND model_role = 'active'"
            ),
            {"a": accounts[5]},
        )
        rows = list(
            await conn.execute(
                text(
                    "SELECT account_id, band, coalesce(score, -1) AS score,"
                    " coalesce(score - previous_score, 0) AS change FROM scores"
                    " WHERE objective = 'churn_risk' AND model_role = 'active'"
                )
            )
        )
    assert len({r.band for r in rows}) >= 3
    for sort in ("score", "-score", "change", "-change"):
        key = sort.lstrip("-")
        expected = sorted(rows, key=lambda r: (getattr(r, key), r.account_id))
        if sort.startswith("-"):
            expected.reverse()
        listed = await _every_page(client, {"sort": sort, "limit": 6})
        assert [i["account_id"] for i in listed] == [r.account_id for r in expected], sort
        two = await _every_page(client, {"sort": sort, "limit": 4, "band": ["at_risk", "healthy"]})
        assert [i["account_id"] for i in two] == [
            r.account_id for r in expected if r.band in ("at_risk", "healthy")
        ], sort
    assert accounts[5] in {i["account_id"] for i in listed}


def cache_lookups(metrics: str) -> tuple[float, float]:
    found = {
        result: float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        for result in ("hit", "miss")
        if line.startswith(f'healthscore_api_health_cache_lookups_total{{result="{result}"}}')
    }
    return found.get("hit", 0.0), found.get("miss", 0.0)


async def test_health_answers_are_cached_until_postgresql_says_they_changed(  # type: ignore[no-untyped-def]
    api, engine: AsyncEngine
) -> None:
    client, accounts = api
    account, url = accounts[3], f"/v1/accounts/{accounts[3]}/health"

    async def name() -> str:
        return str((await client.get(url, headers=AUTH)).json()["name"])

    async def sql(statement: str, notify: list[str] | None = None) -> None:
        async with engine.begin() as conn:
            await conn.execute(text(statement), {"a": account})
            if notify is not None:
                await conn.exec_driver_sql(NOTIFY_CHANGED, (notify,))

    original = await name()
    before = cache_lookups((await client.get("/metrics")).text)
    assert await name() == original
    after = cache_lookups((await client.get("/metrics")).text)
    assert after == (before[0] + 1, before[1])  # the second read came from memory

    # a write that notifies nobody is not seen: the answer really is served from memory
    await sql("UPDATE accounts SET name = 'renamed quietly' WHERE account_id = :a")
    await asyncio.sleep(0.3)
    assert await name() == original
    # the notification of a change drops it, also as one part of a notification in several
    # parts (ids of over 8,000 bytes)
    others = [f"acc-{i:040d}" for i in range(400)]
    await sql("UPDATE accounts SET name = 'renamed' WHERE account_id = :a", [*others, account])

    async def renamed() -> bool:
        return await name() == "renamed"

    await wait_for(renamed, timeout=5, interval=0.05)
    # a rolled-back write notifies nobody either
    with contextlib.suppress(RuntimeError):
        async with engine.begin() as conn:
            await conn.execute(
                text("UPDATE accounts SET name = 'x' WHERE account_id = :a"), {"a": account}
            )
            await conn.exec_driver_sql(NOTIFY_CHANGED, ([account],))
            raise RuntimeError("roll back")
    assert await name() == "renamed"

    # the scorer's own writes notify: re-scoring the account later changes its answer at once
    evaluated = (await client.get(url, headers=AUTH)).json()["objectives"][0]["evaluated_at"]
    later = datetime.now(UTC) + timedelta(minutes=5)
    signals = [s for s in simulated_signals(40, 40, seed=5) if s.account_id == account]
    await score_and_store(engine, signals, [later])

    async def rescored() -> bool:
        body = (await client.get(url, headers=AUTH)).json()
        return bool(body["objectives"][0]["evaluated_at"] != evaluated)

    await wait_for(rescored, timeout=5, interval=0.05)


async def test_the_cache_steps_aside_while_it_cannot_hear_changes(  # type: ignore[no-untyped-def]
    api, engine: AsyncEngine
) -> None:
    client, accounts = api
    url = f"/v1/accounts/{accounts[4]}/health"

    async def listening() -> bool:
        return "healthscore_api_health_cache_listening 1.0" in (await client.get("/metrics")).text

    assert await listening()
    await client.get(url, headers=AUTH)  # cached
    async with engine.begin() as conn:
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND query LIKE 'LISTEN%'"
            )
        )
        assert killed == 1
        await conn.execute(
            text("UPDATE accounts SET name = 'unheard' WHERE account_id = :a"), {"a": accounts[4]}
        )

    async def bypassed() -> bool:
        return not await listening()

    await wait_for(bypassed, timeout=5, interval=0.05)
    # meanwhile every answer comes from PostgreSQL, so a change nobody announced is seen
    assert (await client.get(url, headers=AUTH)).json()["name"] == "unheard"
    await wait_for(listening, timeout=5, interval=0.05)  # it listens again by itself
    hits = cache_lookups((await client.get("/metrics")).text)[0]
    await client.get(url, headers=AUTH)
    await client.get(url, headers=AUTH)
    assert cache_lookups((await client.get("/metrics")).text)[0] == hits + 1


async def test_a_cached_answer_drops_an_override_when_it_expires(api) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    url = f"/v1/accounts/{accounts[5]}/health"
    expires = datetime.now(UTC) + timedelta(seconds=2)
    created = await client.post(
        f"/v1/accounts/{accounts[5]}/overrides",
        headers=AUTH,
        json={
            "action": "adjust",
            "value": 5,
            "reason": "short trial",
            "expires_at": expires.isoformat(),
        },
    )
    assert created.status_code == 202
    # read your writes: the answer lists the override at once, and is then held in memory
    for _ in range(2):
        active = (await client.get(url, headers=AUTH)).json()["active_overrides"]
        assert [o["override_id"] for o in active] == [created.json()["override_id"]]
    await asyncio.sleep((expires - datetime.now(UTC)).total_seconds() + 0.1)
    assert (await client.get(url, headers=AUTH)).json()["active_overrides"] == []


async def test_authentication_and_scopes(api) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    url = f"/v1/accounts/{accounts[0]}/health"
    missing = assert_problem(await client.get(url), 401)
    assert "token is required" in missing["detail"]
    assert_problem(await client.get(url, headers={"Authorization": "Bearer wrong"}), 401)
    assert_problem(await client.get(url, headers={"Authorization": f"Basic {READ}"}), 401)
    assert (await client.get(url, headers={"Authorization": f"Bearer {READ}"})).status_code == 200
    assert_problem(await client.get(url, headers={"Authorization": f"Bearer {WRITE}"}), 403)
    body = {
        "action": "pin",
        "value": 10,
        "reason": "test",
        "expires_at": (datetime.now(UTC) + timedelta(days=1)).isoformat(),
    }
    post = f"/v1/accounts/{accounts[0]}/overrides"
    assert_problem(await client.post(post, json=body), 401)
    assert_problem(
        await client.post(post, json=body, headers={"Authorization": f"Bearer {READ}"}), 403
    )
    for open_path in ("/healthz", "/readyz", "/metrics"):
        assert (await client.get(open_path)).status_code == 200
    async with engine_count(client) as count:
        assert count == 0  # nothing was written without the write scope


@contextlib.asynccontextmanager
async def engine_count(client: httpx.AsyncClient) -> AsyncIterator[int]:
    engine = client._transport.app.state.engine  # type: ignore[attr-defined]
    async with engine.connect() as conn:
        yield int(await conn.scalar(text("SELECT count(*) FROM overrides")))


async def test_overrides_are_recorded_audited_listed_and_revoked(api, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    account = accounts[2]
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    body = {
        "action": "pin",
        "objective": "churn_risk",
        "value": 20,
        "reason": "renewal call went badly",
        "expires_at": expires,
    }
    created = await client.post(f"/v1/accounts/{account}/overrides", json=body, headers=AUTH)
    assert created.status_code == 202
    override_id = created.json()["override_id"]
    listed = (await client.get(f"/v1/accounts/{account}/overrides", headers=AUTH)).json()
    assert [(o["override_id"], o["status"], o["author"]) for o in listed] == [
        (override_id, "active", "admin@example.com")
    ]
    health = (await client.get(f"/v1/accounts/{account}/health", headers=AUTH)).json()
    assert [o["override_id"] for o in health["active_overrides"]] == [override_id]
    async with engine.connect() as conn:
        outbox = list(
            await conn.execute(text("SELECT topic, key, payload, content_type FROM outbox"))
        )
        audit = list(await conn.execute(text("SELECT action, actor FROM override_audit")))
    assert len(outbox) == 1 and outbox[0].topic.startswith("signals-")
    assert outbox[0].key == account and b'"override_set"' in outbox[0].payload
    assert audit == [("created", "admin@example.com")]

    revoke = await client.delete(
        f"/v1/accounts/{account}/overrides/{override_id}",
        headers=AUTH,
        params={"reason": "spoke too soon"},
    )
    assert revoke.status_code == 202
    again = await client.delete(f"/v1/accounts/{account}/overrides/{override_id}", headers=AUTH)
    assert_problem(again, 409)
    listed = (await client.get(f"/v1/accounts/{account}/overrides", headers=AUTH)).json()
    assert listed[0]["status"] == "revoked" and listed[0]["revoke_reason"] == "spoke too soon"
    assert_problem(await client.delete(f"/v1/accounts/{account}/overrides/nope", headers=AUTH), 404)


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"action": "pin", "value": 101}, 422),
        ({"action": "adjust", "value": -150}, 422),
        ({"action": "sentiment", "value": 50, "objective": "churn_risk"}, 422),
        ({"action": "pin", "value": 50, "objective": "world_peace"}, 422),
        ({"action": "pin", "value": 50, "reason": ""}, 422),
        ({"action": "pin", "value": 50, "expires_in_days": -1}, 422),
        ({"action": "pin", "value": 50, "expires_in_days": 400}, 422),
        ({"action": "explode", "value": 50}, 422),
        ({"action": "pin", "value": 50, "unexpected": True}, 422),
        ({"action": "pin", "value": 50, "reason": "x" * 3000}, 413),
    ],
)
async def test_invalid_overrides_get_problems(api, body: dict[str, Any], status: int) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    days = body.pop("expires_in_days", 3)
    payload = {
        "reason": "because",
        "expires_at": (datetime.now(UTC) + timedelta(days=days)).isoformat(),
        **body,
    }
    response = await client.post(
        f"/v1/accounts/{accounts[0]}/overrides", json=payload, headers=AUTH
    )
    problem = assert_problem(response, status)
    if status == 422 and "errors" in problem:
        assert problem["errors"][0]["location"]


async def test_models_describe_how_scores_are_made(api) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    body = (await client.get("/v1/models", headers=AUTH)).json()
    (model,) = body["models"]
    assert model["role"] == "active" and model["version"] == MODEL.version
    assert set(model["definition"]["objectives"]) == {"churn_risk", "expansion"}
    assert model["definition"]["segments"][0]["name"] == "enterprise"


async def test_request_metrics_use_route_templates(api) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    await asyncio.gather(
        *(client.get(f"/v1/accounts/{a}/health", headers=AUTH) for a in accounts[:3])
    )
    metrics = (await client.get("/metrics")).text
    assert (
        'healthscore_api_requests_total{method="GET",'
        'route="/v1/accounts/{account_id}/health",status="200"} 3.0'
    ) in metrics
    assert accounts[0] not in metrics
    for path in ("/docs", "/openapi.json", "/no/such/page"):
        await client.get(path)
    metrics = (await client.get("/metrics")).text
    for route, status in (("/docs", 200), ("/openapi.json", 200), ("unmatched", 404)):
        line = f'healthscore_api_requests_total{{method="GET",route="{route}",status="{status}"}}'
        assert f"{line} 1.0" in metrics, route


async def test_an_override_goes_through_broker_and_scorer_and_comes_back(
    settings: Settings, engine: AsyncEngine
) -> None:
    from tests.support.kafka_io import read_topic
    from tests.support.signals import produce_signals, running_scorer, wait_consumed

    signals = simulated_signals(5, 30, seed=8)
    total = await produce_signals(settings, signals)
    account = signals[0].account_id
    async with running_scorer(settings, engine), client_for(settings) as client:
        await wait_consumed(engine, settings, total)
        expires = (datetime.now(UTC) + timedelta(days=3)).isoformat()
        created = await client.post(
            f"/v1/accounts/{account}/overrides",
            headers=AUTH,
            json={
                "action": "pin",
                "objective": "churn_risk",
                "value": 12,
                "reason": "customer announced a competitor evaluation",
                "expires_at": expires,
            },
        )
        assert created.status_code == 202
        override_id = created.json()["override_id"]
        await wait_consumed(engine, settings, total + 1)  # the override signal, via the relay
        health = (await client.get(f"/v1/accounts/{account}/health", headers=AUTH)).json()
        churn = next(o for o in health["objectives"] if o["objective"] == "churn_risk")
        assert churn["score"] == 12 and churn["band"] == "at_risk"
        assert churn["overrides"][0]["override_id"] == override_id
        assert churn["overrides"][0]["author"] == "admin@example.com"
        expansion = next(o for o in health["objectives"] if o["objective"] == "expansion")
        assert expansion["overrides"] == []
        history = (
            await client.get(
                f"/v1/accounts/{account}/health/history",
                headers=AUTH,
                params={"objective": "churn_risk"},
            )
        ).json()["items"]
        assert history[0]["cause"] == "override" and history[0]["new_score"] == 12
        events = await read_topic(settings, settings.kafka.topics.changes, settle=2.0)
        assert any(
            b"io.account-health.override.applied" in e.value and override_id.encode() in e.value
            for e in events
        )

        await client.delete(f"/v1/accounts/{account}/overrides/{override_id}", headers=AUTH)
        await wait_consumed(engine, settings, total + 2)
        health = (await client.get(f"/v1/accounts/{account}/health", headers=AUTH)).json()
        churn = next(o for o in health["objectives"] if o["objective"] == "churn_risk")
        assert churn["overrides"] == [] and churn["score"] != 12


async def test_health_and_lists_say_whose_the_account_is(api, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    client, accounts = api
    health = (await client.get(f"/v1/accounts/{accounts[0]}/health", headers=AUTH)).json()
    assert health["owner"] in OWNERS and health["currency"] == "USD"
    assert health["mrr"] is not None and health["mrr"] >= 0
    async with engine.connect() as conn:
        theirs = set(
            await conn.scalars(
                text(
                    "SELECT a.account_id FROM accounts a JOIN scores s USING (account_id)"
                    " WHERE a.owner = :owner AND s.objective = 'churn_risk'"
                    " AND s.model_role = 'active'"
                ),
                {"owner": OWNERS[1]},
            )
        )
    assert theirs
    listed, cursor = [], None
    while True:
        params = {"owner": OWNERS[1].upper(), **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/v1/accounts", params=params, headers=AUTH)).json()
        listed += page["items"]
        if not (cursor := page["next_cursor"]):
            break
    assert {i["account_id"] for i in listed} == theirs  # any case
    assert {i["owner"] for i in listed} == {OWNERS[1]}


async def test_the_portfolio_equals_a_count_in_sql(api, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    client, _ = api
    await portfolio.count(engine, datetime.now(UTC).date())  # what the counting scorer records
    body = (await client.get("/v1/portfolio", params={"by": "owner"}, headers=AUTH)).json()
    async with engine.connect() as conn:
        rows = list(
            await conn.execute(
                text(
                    "SELECT a.owner, s.band, count(*), sum(a.mrr_cents) FROM scores s"
                    " JOIN accounts a USING (account_id) WHERE s.objective = 'churn_risk'"
                    " AND s.model_role = 'active' GROUP BY 1, 2"
                )
            )
        )
        history = list(
            await conn.execute(
                text(
                    "SELECT account_id, old_band, new_band FROM score_history"
                    " WHERE objective = 'churn_risk' AND model_role = 'active'"
                    " AND at >= now() - interval '7 days' AND old_band IS NOT NULL"
                )
            )
        )
    bands: dict[str, list[int]] = {}
    for _, band, n, cents in rows:
        bands.setdefault(band, [0, 0])
        bands[band][0] += n
        bands[band][1] += cents
    total = body["total"]
    assert total["accounts"] == sum(n for n, _ in bands.values())
    assert {f["band"]: [f["accounts"], round(f["mrr"]["USD"] * 100)] for f in total["bands"]} == (
        bands
    )
    by_owner = {g["key"]: g["accounts"] for g in body["groups"]}
    expected: dict[str, int] = {}
    for owner, _, n, _ in rows:
        expected[owner] = expected.get(owner, 0) + n
    assert by_owner == expected
    order = ["unknown", *(b.name for b in MODEL.objectives["churn_risk"].bands)]
    worse = {a for a, old, new in history if order.index(new) < order.index(old)}
    got = {w["account_id"] for w in body["worsened"]}  # at most a page (25 here)
    assert worse and got <= worse and len(got) == min(len(worse), 25)
    (today,) = body["days"]  # recorded above
    assert {f["band"]: f["accounts"] for f in today["bands"]} == {
        b: n for b, (n, _) in bands.items()
    }
    unknown = await client.get("/v1/portfolio", params={"objective": "nope"}, headers=AUTH)
    assert_problem(unknown, 422)


async def test_a_parent_rolls_up_its_three_children_weighted_by_mrr(
    settings: Settings, engine: AsyncEngine
) -> None:
    now = datetime.now(UTC)
    signals = []
    for child, mrr, seats in (
        ("acme-emea", "100", 10),
        ("acme-us", "300", 45),
        ("acme-apac", "0", 2),
    ):
        events = valid_events(now, child)
        profile = {**events["account_profile_updated"], "parent_account_id": "acme"}
        subscription = {**events["subscription_created"], "mrr": mrr}
        used = {**events["seats_used_reported"], "seats_in_use": seats}
        signals += [signal_of(e, now) for e in (profile, subscription, used)]
    await score_and_store(engine, signals, [now])
    async with client_for(settings) as client:
        body = (await client.get("/v1/accounts/acme/children", headers=AUTH)).json()
        assert_problem(await client.get("/v1/accounts/nobody/children", headers=AUTH), 404)
        alone = await client.get("/v1/accounts/acme-us/children", headers=AUTH)
        assert alone.status_code == 200 and alone.json()["items"] == []  # known, childless
        listed = (await client.get("/v1/accounts", params={"q": "acme-"}, headers=AUTH)).json()
        assert {(i["account_id"], i["parent_account_id"]) for i in listed["items"]} == {
            ("acme-emea", "acme"),
            ("acme-us", "acme"),
            ("acme-apac", "acme"),
        }
    churn = {i["account_id"]: i for i in body["items"] if i["objective"] == "churn_risk"}
    assert set(churn) == {"acme-emea", "acme-us", "acme-apac"}
    assert {c: churn[c]["mrr"] for c in churn} == {"acme-emea": 100, "acme-us": 300, "acme-apac": 0}
    (rollup,) = [r for r in body["rollups"] if r["objective"] == "churn_risk"]
    # by hand: 100 and 300 of MRR weigh their scores; the child with none weighs nothing
    expected = (100 * churn["acme-emea"]["score"] + 300 * churn["acme-us"]["score"]) / 400
    assert rollup["score"] == pytest.approx(expected, abs=1e-4) and rollup["children"] == 3
    weakest = min(churn.values(), key=lambda c: c["score"])
    assert rollup["weakest"]["account_id"] == weakest["account_id"]
    bands = MODEL.objectives["churn_risk"].bands
    assert rollup["band"] == max((b for b in bands if expected >= b.min), key=lambda b: b.min).name
