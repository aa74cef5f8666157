"""The console's pages over HTTP, against a real PostgreSQL holding what the scorer's code
wrote: sign-in, sessions and CSRF, read-only viewers, the proxy's identity, the pages and
their empty and error states, back-test reports, and /docs without a network."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app
from shared.config import Settings
from tests.integration.test_api import BOTH, READ, api_settings
from tests.support.signals import seed

pytestmark = pytest.mark.asyncio(loop_scope="session")
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def console_settings(settings: Settings, reports: Path, **api: Any) -> Settings:
    base = api_settings(settings)
    return base.model_copy(
        update={"api": base.api.model_copy(update={"reports_dir": reports, **api})}
    )


@contextlib.asynccontextmanager
async def console_for(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            yield client


async def sign_in(client: httpx.AsyncClient, token: str) -> httpx.Response:
    form = await client.get("/console/sign-in")
    csrf = CSRF.search(form.text).group(1)  # type: ignore[union-attr]
    return await client.post(
        "/console/sign-in", data={"csrf": csrf, "token": token, "next": "/console/accounts"}
    )


def csrf_of(page: httpx.Response) -> str:
    found = CSRF.search(page.text)
    assert found, page.text[:500]
    return found.group(1)


@pytest.fixture
async def console(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, list[str]]]:
    accounts = await seed(settings, engine)
    async with console_for(console_settings(settings, tmp_path)) as client:
        yield client, accounts


async def test_pages_need_a_signed_in_viewer(console) -> None:  # type: ignore[no-untyped-def]
    client, accounts = console
    for path in ("/console/accounts", f"/console/accounts/{accounts[0]}", "/console/model"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/console/sign-in?next=")
    wrong = await sign_in(client, "not-a-token")
    assert wrong.status_code == 401 and "That token is not valid" in wrong.text
    assert (await client.get("/console/accounts")).status_code == 303  # still signed out
    right = await sign_in(client, BOTH)
    assert right.status_code == 303 and right.headers["location"] == "/console/accounts"
    cookie = right.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie and "path=/console" in cookie
    assert "secure" not in cookie  # plain HTTP here; over TLS the cookie is Secure
    listing = await client.get("/console/accounts")
    assert listing.status_code == 200 and "admin@example.com" in listing.text
    assert listing.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in listing.headers["content-security-policy"]
    # the cookie names the token's hash, never the token
    assert BOTH not in right.headers["set-cookie"]


async def test_the_list_filters_counts_bands_and_pages(console, engine: AsyncEngine) -> None:  # type: ignore[no-untyped-def]
    client, accounts = console
    await sign_in(client, BOTH)
    async with engine.connect() as conn:
        counted = await conn.execute(
            text(
                "SELECT band, count(*) FROM scores WHERE objective = 'churn_risk' "
                "AND model_role = 'active' GROUP BY band"
            )
        )
        bands = {band: count for band, count in counted}
        tier, in_tier = (
            await conn.execute(
                text("SELECT tier, count(*) FROM accounts GROUP BY tier ORDER BY 2 DESC LIMIT 1")
            )
        ).one()
    page = await client.get("/console/accounts")
    for band, count in bands.items():
        assert re.search(rf'<span class="count">{count}</span> {band}</a>', page.text), band
    assert f"{len(accounts)} in all</span>" in page.text
    # the form sends its empty fields too: they filter nothing
    empty = await client.get("/console/accounts?q=&tier=&segment=&objective=churn_risk")
    assert f"{len(accounts)} in all</span>" in empty.text
    rows = re.findall(r'<tr>\s*<th scope="row"><a href="/console/accounts/([^"]+)"', page.text)
    assert len(rows) == len(accounts)  # 40 accounts, one page of 50
    filtered = await client.get("/console/accounts", params={"tier": tier})
    shown = re.findall(r'<th scope="row"><a href="/console/accounts/([^"]+)"', filtered.text)
    assert len(shown) == in_tier and f"{in_tier} in all that match" in filtered.text
    by_id = await client.get("/console/accounts", params={"q": accounts[7]})
    assert re.findall(r'<th scope="row"><a href="/console/accounts/([^"]+)"', by_id.text) == [
        accounts[7]
    ]
    none = await client.get("/console/accounts", params={"q": "no-such-account"})
    assert "No account matches these filters" in none.text
    assert '<svg class="spark"' in page.text  # each row's trend
    unknown = await client.get("/console/accounts", params={"tier": "galactic"})
    assert unknown.status_code == 422 and "tier" in unknown.text
    assert unknown.headers["content-type"].startswith("text/html")


async def test_an_account_shows_its_explanation_history_and_overrides(console) -> None:  # type: ignore[no-untyped-def]
    client, accounts = console
    await sign_in(client, BOTH)
    health = await client.get(
        f"/v1/accounts/{accounts[0]}/health", headers={"Authorization": f"Bearer {BOTH}"}
    )
    churn = next(o for o in health.json()["objectives"] if o["objective"] == "churn_risk")
    page = await client.get(f"/console/accounts/{accounts[0]}")
    assert page.status_code == 200
    assert f'data-objective="churn_risk">{churn["score"]:.1f}</span>' in page.text
    ok = [f for f in churn["factors"] if f["status"] == "ok"]
    confidence = churn["confidence"]
    # the bars' points add up to the weighted score's distance from 50
    points = [f["weight"] / confidence * (f["sub_score"] - 50) for f in ok]
    assert sum(points) == pytest.approx(churn["weighted_score"] - 50, abs=0.01)
    for f, p in zip(ok, points, strict=True):
        assert f"{p:+.1f}" in page.text, f["factor"]
    assert page.text.count('<svg class="history"') == 2  # one per objective
    assert "Override the score" in page.text
    missing = await client.get("/console/accounts/no-such-account")
    assert missing.status_code == 404 and "There is no account" in missing.text


async def test_forms_without_the_session_csrf_token_are_refused(console) -> None:  # type: ignore[no-untyped-def]
    client, accounts = console
    await sign_in(client, BOTH)
    target = f"/console/accounts/{accounts[0]}/overrides"
    form = {"action": "pin", "value": "10", "days": "3", "reason": "forged", "intent": "save"}
    for csrf in (None, "guessed"):
        data = form if csrf is None else {**form, "csrf": csrf}
        refused = await client.post(target, data=data)
        assert refused.status_code == 403 and "This form cannot be accepted" in refused.text
    page = await client.get(f"/console/accounts/{accounts[0]}")
    other_site = await client.post(
        target, data={**form, "csrf": csrf_of(page)}, headers={"Origin": "https://evil.example"}
    )
    assert other_site.status_code == 403
    assert "No one has overridden" in (await client.get(f"/console/accounts/{accounts[0]}")).text


async def test_a_read_only_viewer_sees_no_override_form_and_cannot_post_one(console) -> None:  # type: ignore[no-untyped-def]
    client, accounts = console
    await sign_in(client, READ)
    page = await client.get(f"/console/accounts/{accounts[0]}")
    assert page.status_code == 200 and "read only" in page.text
    assert "Override the score" not in page.text and "Revoke" not in page.text
    refused = await client.post(
        f"/console/accounts/{accounts[0]}/overrides",
        data={
            "csrf": csrf_of(page),
            "action": "pin",
            "value": "10",
            "days": "3",
            "reason": "not mine to set",
            "intent": "save",
        },
    )
    assert (
        refused.status_code == 403
        and "may read scores, not set or revoke overrides" in refused.text
    )


async def test_preview_and_invalid_override_forms(console) -> None:  # type: ignore[no-untyped-def]
    client, accounts = console
    await sign_in(client, BOTH)
    page = await client.get(f"/console/accounts/{accounts[0]}")
    target = f"/console/accounts/{accounts[0]}/overrides"
    base = {"csrf": csrf_of(page), "objective": "churn_risk", "days": "7", "reason": "pinned"}
    previewed = await client.post(
        target, data={**base, "action": "pin", "value": "12", "intent": "preview"}
    )
    assert previewed.status_code == 200
    assert re.search(
        r"churn_risk: [\d.]+ \(\w+\) → <strong>12\.0</strong> \(at_risk\)", previewed.text
    )
    assert "No one has overridden" in previewed.text  # a preview saves nothing
    bad = await client.post(
        target, data={**base, "action": "pin", "value": "140", "intent": "save"}
    )
    assert bad.status_code == 422 and "value for pin must lie in 0..100" in bad.text
    assert 'value="140"' in bad.text  # what was typed is kept
    late = await client.post(
        target, data={**base, "action": "pin", "value": "1", "days": "999", "intent": "save"}
    )
    assert late.status_code == 422
    assert "Expires after: from 1 to 90 days." in late.text
    saved = await client.post(
        target, data={**base, "action": "pin", "value": "12", "intent": "save"}
    )
    assert saved.status_code == 303 and "?saved=" in saved.headers["location"]
    after = await client.get(saved.headers["location"].split("#")[0])
    assert "Waiting for the scorer to apply" in after.text  # no scorer runs in this test
    assert '<meta http-equiv="refresh"' in after.text


async def test_the_api_previews_an_override_without_saving_it(console) -> None:  # type: ignore[no-untyped-def]
    client, accounts = console
    auth = {"Authorization": f"Bearer {BOTH}"}
    from datetime import UTC, datetime, timedelta

    expires = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    answer = await client.post(
        f"/v1/accounts/{accounts[1]}/overrides/preview",
        headers=auth,
        json={"action": "adjust", "value": -10, "reason": "what if", "expires_at": expires},
    )
    assert answer.status_code == 200, answer.text
    for objective in answer.json()["objectives"]:
        if objective["score"] is not None:
            assert objective["preview_score"] == pytest.approx(
                max(objective["score"] - 10, 0), abs=0.01
            )
    listed = await client.get(f"/v1/accounts/{accounts[1]}/overrides", headers=auth)
    assert listed.json() == []


async def test_a_trusted_proxy_names_the_viewer(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    accounts = await seed(settings, engine, accounts=5)
    configured = console_settings(
        settings,
        tmp_path,
        proxy_user_header="X-Forwarded-Email",
        proxy_writers=["cs.lead@example.com"],
    )
    async with console_for(configured) as client:
        lead = {"X-Forwarded-Email": "cs.lead@example.com"}
        page = await client.get(f"/console/accounts/{accounts[0]}", headers=lead)
        assert page.status_code == 200 and "cs.lead@example.com" in page.text
        assert "Override the score" in page.text
        saved = await client.post(
            f"/console/accounts/{accounts[0]}/overrides",
            headers=lead,
            data={
                "csrf": csrf_of(page),
                "action": "adjust",
                "value": "-5",
                "days": "2",
                "reason": "renewal call went badly",
                "intent": "save",
            },
        )
        assert saved.status_code == 303
        overrides = await client.get(
            f"/v1/accounts/{accounts[0]}/overrides", headers={"Authorization": f"Bearer {BOTH}"}
        )
        assert overrides.json()[0]["author"] == "cs.lead@example.com"  # the person, not a token
        reader = await client.get(
            f"/console/accounts/{accounts[0]}", headers={"X-Forwarded-Email": "ae@example.com"}
        )
        assert "read only" in reader.text and "Override the score" not in reader.text
    # from an address that is not the proxy's, the header is not believed
    app = create_app(configured)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 5555))
        async with httpx.AsyncClient(transport=transport, base_url="http://console") as client:
            spoofed = await client.get("/console/accounts", headers=lead)
            assert spoofed.status_code == 303


async def test_backtest_reports_are_listed_and_shown_and_nothing_else(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    await seed(settings, engine, accounts=3)
    folder = tmp_path / "q3-fit"
    folder.mkdir()
    summary = {
        "accounts": 5000,
        "events": {"signals": 645354},
        "outcome": "churn",
        "models": {"default": {"objectives": {"churn_risk": {"test": {"roc_auc": 0.861}}}}},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "report.html").write_text("<html><body><h1>Back-test</h1></body></html>")
    (tmp_path / "secret.txt").write_text("not a report")
    async with console_for(console_settings(settings, tmp_path)) as client:
        await sign_in(client, READ)
        listing = await client.get("/console/backtests")
        assert 'href="/console/backtests/q3-fit"' in listing.text and "0.861" in listing.text
        shown = await client.get("/console/backtests/q3-fit")
        assert 'src="/console/backtests/q3-fit/report.html"' in shown.text
        report = await client.get("/console/backtests/q3-fit/report.html")
        assert report.status_code == 200 and "<h1>Back-test</h1>" in report.text
        assert "default-src 'none'" in report.headers["content-security-policy"]
        for path in ("../secret.txt", "..", "%2e%2e/secret.txt", "q3-fit/../../etc"):
            refused = await client.get(f"/console/backtests/{path}/report.html")
            assert refused.status_code == 404, path
    async with console_for(console_settings(settings, tmp_path / "none")) as client:
        await sign_in(client, READ)
        assert "No reports yet" in (await client.get("/console/backtests")).text


async def test_the_model_page_describes_every_factor(console) -> None:  # type: ignore[no-untyped-def]
    from tests.support.signals import MODEL

    client, _ = console
    await sign_in(client, READ)
    page = await client.get("/console/model")
    assert page.status_code == 200 and MODEL.version in page.text
    for name, factor in MODEL.factors.items():
        assert f'id="f-{name}"' in page.text
        assert str(escape(factor.description)) in page.text
    assert page.text.count('<svg class="curve"') >= len(MODEL.factors)
    assert "churn_risk" in page.text and "at_risk" in page.text


async def test_docs_load_nothing_from_the_network(console) -> None:  # type: ignore[no-untyped-def]
    client, _ = console
    for path in ("/docs", "/redoc"):
        page = await client.get(path)
        assert page.status_code == 200
        sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sources and all(s.startswith("/") for s in sources), sources
        for source in sources:
            asset = await client.get(source)
            assert asset.status_code == 200 and len(asset.content) > 1000, source
    assert "fonts.googleapis" not in (await client.get("/redoc")).text
