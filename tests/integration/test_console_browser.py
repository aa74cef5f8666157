"""The console in a real Chromium (Debian's `chromium`, which `make test` installs when it is
missing, driven by Playwright): a person signs in from the link `make run` prints, filters the
list, reads an account's explanation and history, previews and sets an override that the real
scorer applies through the real broker, revokes it, and signs out; a read-only person sees no
override form; a forged form is refused. Each page is photographed at laptop and phone width
into reports/screenshots/ (or $SCREENSHOTS_DIR) for a person to look at."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import uvicorn
from playwright.async_api import Browser, Page, async_playwright, expect
from prometheus_client import CollectorRegistry
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from healthscore.devstack import free_port
from services.api.app import create_app
from services.api.auth import hash_token
from services.scorer.quality import Quality
from services.simulator.world import OWNERS
from shared.config import ApiToken, QualitySettings, Settings
from tests.integration.test_api import BOTH, CSM, READ
from tests.integration.test_console import console_settings
from tests.support.facts import MODEL
from tests.support.signals import running_scorer, seed

pytestmark = pytest.mark.asyncio(loop_scope="session")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
SHOTS = Path(os.environ.get("SCREENSHOTS_DIR", "reports/screenshots"))
WIDTHS = {"laptop": {"width": 1366, "height": 900}, "phone": {"width": 390, "height": 844}}
# keep Chromium off the network: this machine has none, and a test must not depend on one
FLAGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
    "--disable-gpu",
]


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        assert not task.done(), "the API exited while starting"
        await asyncio.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    assert shutil.which(CHROMIUM), (
        f"{CHROMIUM} is missing: `make test` installs Debian's chromium (scripts/ensure-tools.sh)"
    )
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def photograph(page: Page, name: str) -> None:
    """The page as it stands at each width, whole, into the screenshots folder."""
    await asyncio.to_thread(SHOTS.mkdir, parents=True, exist_ok=True)
    for width, size in WIDTHS.items():
        await page.set_viewport_size(size)
        await page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    await page.set_viewport_size(WIDTHS["laptop"])


def advice_of(factor: str) -> str:
    return MODEL.factors[factor].advice


async def test_a_person_reads_overrides_and_revokes_in_a_real_browser(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    accounts = await seed(settings, engine, accounts=30)
    async with engine.connect() as conn:
        tier, in_tier = (
            await conn.execute(
                text("SELECT tier, count(*) FROM accounts GROUP BY tier ORDER BY 2 DESC LIMIT 1")
            )
        ).one()
    configured = console_settings(settings, tmp_path)
    async with (
        running_scorer(configured, engine),
        serving(configured) as base,
        chromium() as browser,
    ):
        context = await browser.new_context(
            viewport=WIDTHS["laptop"], timezone_id="America/New_York"
        )
        page = await context.new_page()
        expect.set_options(timeout=15_000)

        # the link `make run` prints: its fragment carries the token, and the page signs it in
        # on the first page, the portfolio
        await page.goto(f"{base}/console/sign-in#token={BOTH}")
        await expect(page.get_by_role("heading", name=re.compile("^Portfolio"))).to_be_visible()
        assert BOTH not in page.url  # the fragment is gone from the address bar
        await expect(page.locator("header.top")).to_contain_text("admin@example.com")
        await page.get_by_role("link", name="Accounts", exact=True).click()
        await expect(page.get_by_role("heading", name=re.compile("^Accounts"))).to_be_visible()
        # times are shown in the viewer's own zone (New York here), not in UTC
        first_time = page.locator("table.accounts time").first
        await expect(first_time).to_contain_text(re.compile(r"\b(EST|EDT)\b"))
        # keyboard: the first Tab reaches the skip link, which moves on to the content
        await page.keyboard.press("Tab")
        await expect(page.locator(".skip")).to_be_focused()
        await photograph(page, "accounts")

        # filter the list by tier
        await page.get_by_label("Tier").select_option(tier)
        await page.get_by_role("button", name="Show").click()
        await expect(page.locator("nav.bands")).to_contain_text(f"{in_tier} in all that match")
        await expect(page.locator("table.accounts tbody tr")).to_have_count(in_tier)

        # open an account: its explanation and its history
        account = accounts[0]
        await page.goto(f"{base}/console/accounts?q={account}")
        await page.locator("table.accounts tbody th a").first.click()
        await expect(page.get_by_role("heading", name="Why this score").first).to_be_visible()
        churn = page.locator("section.objective", has=page.locator("#obj-churn_risk"))
        await expect(churn.locator("table.effects tbody tr").first).to_be_visible()
        assert await churn.locator("table.effects tbody tr").count() >= 5
        await expect(churn.locator("svg.history")).to_be_visible()
        await expect(churn.locator("table.changes tbody tr").first).to_be_visible()
        # what would help, largest gain first, each with the model's advice
        helps = churn.locator("ol.actions li")
        await expect(helps.first).to_be_visible()
        first = await helps.first.get_attribute("data-factor")
        assert first is not None
        await expect(helps.first).to_contain_text(advice_of(first))
        before = await churn.locator(".big.score").inner_text()
        await photograph(page, "account")

        # preview an override, then save it; the page shows it once the scorer applied it
        await page.get_by_label("Pin: the score becomes the value").check()
        await page.get_by_label("Objective (pin and adjust)").select_option("churn_risk")
        await page.get_by_label("Value", exact=True).fill("12")
        await page.get_by_label("Expires after (days)").fill("3")
        await page.get_by_label(re.compile("^Reason \\(everyone")).fill(
            "customer announced a competitor evaluation"
        )
        await page.get_by_role("button", name="Preview").click()
        await expect(page.locator("#preview")).to_contain_text(re.compile(r"churn_risk: .*→ 12\.0"))
        await expect(churn.locator(".big.score")).to_have_text(before)  # nothing saved yet
        await photograph(page, "override-preview")
        await page.get_by_role("button", name="Save override").click()
        await expect(page.locator("#applied")).to_contain_text(
            "The override is applied", timeout=60_000
        )
        await expect(churn.locator(".big.score")).to_have_text("12.0")
        await expect(churn.locator("ol.actions")).to_have_count(0)  # a pin: nothing would help
        active = page.locator("ul.overrides li[data-override]")
        await expect(active).to_have_count(1)
        await expect(active).to_contain_text("by admin@example.com")
        await expect(active).to_contain_text("customer announced a competitor evaluation")

        # a forged form (no CSRF field) is refused, and changes nothing
        refused = await page.evaluate(
            """async (url) => {
                const body = new URLSearchParams({action: 'pin', value: '99', days: '2',
                  reason: 'forged', intent: 'save'});
                const answer = await fetch(url, {method: 'POST', body});
                return [answer.status, await answer.text()];
            }""",
            f"{base}/console/accounts/{account}/overrides",
        )
        assert refused[0] == 403 and "This form cannot be accepted" in refused[1]

        # revoke it
        await active.get_by_label("Reason for revoking").fill("the evaluation ended")
        await active.get_by_role("button", name="Revoke").click()
        await expect(page.locator("#applied")).to_contain_text("revoked", timeout=60_000)
        await expect(churn.locator(".big.score")).to_have_text(before)
        await expect(page.locator("ul.overrides.past")).to_contain_text(
            "revoked by admin@example.com"
        )

        for path, name in (("/console/model", "model"), ("/console/backtests", "backtests")):
            await page.goto(base + path)
            await expect(page.locator("h1")).to_be_visible()
            if name == "model":
                await expect(page.locator("#f-nps .advice")).to_contain_text(advice_of("nps"))
            await photograph(page, name)

        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_text("You are signed out.")).to_be_visible()
        await page.goto(f"{base}/console/accounts")
        await expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        await photograph(page, "sign-in")

        # a read-only person: the account page has no override form and no revoke button
        reader = await (await browser.new_context(viewport=WIDTHS["phone"])).new_page()
        await reader.goto(f"{base}/console/sign-in")
        await reader.get_by_label("API token").fill(READ)
        await reader.get_by_role("button", name="Sign in").click()
        await reader.goto(f"{base}/console/accounts/{account}")
        await expect(reader.locator("header.top")).to_contain_text("read only")
        await expect(reader.get_by_role("heading", name="Why this score").first).to_be_visible()
        assert await reader.get_by_role("button", name="Save override").count() == 0
        assert await reader.get_by_role("button", name="Revoke").count() == 0

        # a CSM: "My accounts" lists the accounts they own, and the portfolio what is at stake
        csm = await (await browser.new_context(viewport=WIDTHS["laptop"])).new_page()
        await csm.goto(f"{base}/console/sign-in#token={CSM}")
        await expect(csm.get_by_role("heading", name=re.compile("^Portfolio"))).to_be_visible()
        await csm.get_by_role("link", name="Accounts", exact=True).click()
        await csm.get_by_role("link", name="My accounts").click()
        await expect(csm.get_by_role("heading", name=re.compile("^My accounts"))).to_be_visible()
        async with engine.connect() as conn:
            owned = await conn.scalar(
                text("SELECT count(*) FROM accounts WHERE owner = :o"), {"o": OWNERS[1]}
            )
        rows = csm.locator("table.accounts tbody tr")
        await expect(rows).to_have_count(owned)
        await expect(csm.locator("table.accounts .owner")).to_have_text([OWNERS[1]] * owned)
        await photograph(csm, "my-accounts")
        await csm.get_by_role("link", name="Portfolio").click()
        await expect(csm.get_by_role("heading", name=re.compile("^Portfolio"))).to_be_visible()
        stake = csm.locator("table.portfolio tfoot td.num").first
        await expect(stake).to_have_text(str(len(accounts)))
        await expect(csm.locator("svg.trend")).to_be_visible()
        await expect(
            csm.get_by_role("heading", name="Moved into a worse band this week")
        ).to_be_visible()
        await expect(csm.locator("table.groups tbody tr").first).to_be_visible()
        await photograph(csm, "portfolio")


async def test_a_person_records_an_outcome_and_reads_the_models_quality_in_a_real_browser(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    """An outcome the stream cannot show (a churn a CSM heard of), recorded in the console;
    the scorer's next measurement on the quality page, with its trend."""
    accounts = await seed(settings, engine, accounts=30)  # scored 20 days ago and now
    configured = console_settings(settings, tmp_path)
    now = datetime.now(UTC)
    async with serving(configured) as base, chromium() as browser:
        page = await (await browser.new_context(viewport=WIDTHS["laptop"])).new_page()
        expect.set_options(timeout=15_000)
        await page.goto(f"{base}/console/sign-in#token={BOTH}")
        await expect(page.get_by_role("heading", name=re.compile("^Portfolio"))).to_be_visible()
        await page.get_by_role("link", name="Quality").click()
        await expect(page.get_by_role("heading", name="Model quality")).to_be_visible()
        await expect(page.locator("#not-measured")).to_be_visible()

        form = page.locator("form.outcome")
        await form.get_by_label("Account id").fill("nobody-at-all")
        await form.get_by_label("When").fill(f"{now - timedelta(days=5):%Y-%m-%d}")
        await form.get_by_role("button", name="Record outcome").click()
        await expect(page.locator("#outcome-errors")).to_contain_text("no account")
        churned = accounts[0]
        await form.get_by_label("Account id").fill(churned)
        await form.get_by_label("Outcome").select_option("churn")
        await form.get_by_label("Note").fill("told us on the renewal call")
        await form.get_by_role("button", name="Record outcome").click()
        await expect(page.locator("#saved")).to_be_visible()
        row = page.locator("table.outcomes tbody tr").first
        await expect(row).to_contain_text(churned)
        await expect(row).to_contain_text("console")
        await expect(row).to_contain_text("admin@example.com")

        # the scorer's measurement, as its relay makes it: the seeded scores of 20 days ago
        # judged against what followed within 10 days
        judge = Quality(
            engine,
            lambda: {"active": MODEL},
            QualitySettings(window_days=15, step_days=1, horizon_days=10),
            CollectorRegistry(),
            lambda: now,
            730,
        )
        measured = await judge.measure(now)
        churn = next(m for m in measured if m["objective"] == "churn_risk")
        assert churn["adverse_accounts"] == 1 and churn["roc_auc"] is not None
        await page.reload()
        section = page.locator("section.quality[data-objective=churn_risk]")
        await expect(section.locator(".roc-auc")).to_contain_text(f"{churn['roc_auc']:.3f}")
        await expect(section.locator(".samples")).to_contain_text(f"{churn['samples']} scores")
        await expect(section).to_contain_text("Few adverse accounts")
        await expect(section.locator("svg.quality polyline[data-series=realised]")).to_be_attached()
        await photograph(page, "quality")


async def test_a_team_proposes_reviews_promotes_and_restores_a_model_in_a_real_browser(
    settings: Settings, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Maria proposes a change in the form (a weight and a band edge), sees which accounts
    would move and the diff, and cannot approve her own; Dana approves it (the scorer scores
    it as shadow), promotes it (the scorer re-scores every account with it), then restores
    the model before it, saying why. Every step is in the audit."""
    await seed(settings, engine, accounts=30)
    base_settings = console_settings(settings, tmp_path)
    people = {"maria": "maria-console-token", "dana": "dana-console-token"}
    tokens = [
        *base_settings.api.tokens,
        *(
            ApiToken(name=name, sha256=hash_token(token), scopes=["read", "model"])
            for name, token in people.items()
        ),
    ]
    configured = base_settings.model_copy(
        update={
            "api": base_settings.api.model_copy(update={"tokens": tokens}),
            "scorer": base_settings.scorer.model_copy(update={"model_follow_seconds": 0.2}),
        }
    )
    async with (
        running_scorer(configured, engine),
        serving(configured) as base,
        chromium() as browser,
    ):
        expect.set_options(timeout=15_000)

        async def signed_in(name: str) -> Page:
            page = await (await browser.new_context(viewport=WIDTHS["laptop"])).new_page()
            await page.goto(f"{base}/console/sign-in#token={people[name]}")
            await expect(page.locator("header.top")).to_contain_text(name)
            await page.get_by_role("link", name="Changes").click()
            await expect(page.get_by_role("heading", name="Model changes")).to_be_visible()
            return page

        maria = await signed_in("maria")
        seeded = maria.locator("table.proposals tbody tr[data-status=active]")
        await expect(seeded).to_contain_text(MODEL.version)
        form = maria.locator("form.proposal")
        await form.get_by_label("Weight of usage").first.fill("0.9")
        await form.get_by_label("healthy from").fill("95")  # hardly anyone is healthy
        await form.get_by_label("Why").fill("usage says more than billing")
        await form.get_by_role("button", name="Propose").click()
        await expect(maria.get_by_role("heading", name=re.compile("^Proposal"))).to_be_visible()
        await expect(maria.locator("#status")).to_have_text("proposed")
        number = re.search(r"/console/models/(\d+)", maria.url).group(1)  # type: ignore[union-attr]
        # its impact before anything changes: who would leave healthy, and the diff
        moves = maria.locator("table.moves[data-objective=churn_risk]")
        await expect(moves.locator("tr.moved").first).to_contain_text("healthy")
        await expect(maria.locator("#diff")).to_contain_text("usage: 0.9")
        await expect(maria.locator("#diff")).to_contain_text("min: 95")
        # her own proposal: she may withdraw it, not approve it
        await expect(maria.get_by_role("button", name=re.compile("^Approve"))).to_have_count(0)
        await expect(maria.get_by_role("button", name="Withdraw")).to_be_visible()
        await photograph(maria, "proposal")

        dana = await signed_in("dana")
        await dana.goto(f"{base}/console/models/{number}")
        review = dana.locator("form[aria-label=approve]")
        await review.get_by_label("Note").fill("try it as shadow for a week")
        await review.get_by_role("button", name=re.compile("^Approve")).click()
        await expect(dana.locator("#status")).to_have_text("shadow")
        candidate = (await dana.locator("dl.facts code").first.text_content() or "").strip()
        await _scored_with(engine, "shadow", candidate)
        await dana.get_by_role("button", name="Promote to active").click()
        await expect(dana.locator("#status")).to_have_text("active")
        await _scored_with(engine, "active", candidate)

        # the model before it, restored: a rollback says why
        await dana.goto(f"{base}/console/models")
        await dana.locator("table.proposals tbody tr[data-status=retired] a").first.click()
        restore = dana.locator("form[aria-label=restore]")
        await restore.get_by_label(re.compile("^Note")).fill("the lists lost their healthy band")
        await restore.get_by_role("button", name="Restore as active").click()
        await expect(dana.locator("#status")).to_have_text("active")
        await _scored_with(engine, "active", MODEL.version)
        audit = dana.locator("#audit li")
        await expect(audit).to_have_count(3)  # seeded, retired, restored
        await expect(audit.last).to_contain_text("the lists lost their healthy band")
        await maria.goto(f"{base}/console/models/{number}")
        await expect(maria.locator("#audit li")).to_have_count(4)
        await expect(maria.locator("#audit")).to_contain_text("approved by dana")
        await photograph(maria, "proposal-audit")


async def _scored_with(engine: AsyncEngine, role: str, version: str) -> None:
    """Wait until every score of `role` is `version`'s; fail saying how far it got."""
    for _ in range(300):
        async with engine.connect() as conn:
            on, rows = (
                await conn.execute(
                    text(
                        "SELECT count(*) FILTER (WHERE model_version = :v), count(*) FROM scores"
                        " WHERE model_role = :role"
                    ),
                    {"v": version, "role": role},
                )
            ).one()
        if rows and on == rows:
            return
        await asyncio.sleep(0.2)
    pytest.fail(f"{on} of {rows} {role} scores on {version} after 60 s")
