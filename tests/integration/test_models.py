"""Model changes as a team makes them: proposed through the API, its impact read before
anything changes, refused to its author and approved by someone else (the scorer serves it as
shadow), promoted (the scorer re-scores every account with it), and the earlier model restored,
every step audited; the CLI takes the same steps under the same rules."""

from __future__ import annotations

import asyncio
import subprocess
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from services.api.app import create_app
from services.api.auth import hash_token
from shared import proposals
from shared.config import DEFAULT_MODEL_PATH, ApiToken, Settings
from shared.proposals import ProposalRefused
from shared.scoring.model import Model
from tests.support.infra import healthscore_argv, run_cli, settings_env
from tests.support.signals import (
    MODEL,
    produce_signals,
    running_scorer,
    simulated_signals,
    wait_consumed,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKENS = {"maria": "maria-token", "dana": "dana-token", "rita": "rita-token"}


def _settings(settings: Settings) -> Settings:
    tokens = [
        ApiToken(
            name=name,
            sha256=hash_token(token),
            scopes=["read"] if name == "rita" else ["read", "model"],
        )
        for name, token in TOKENS.items()
    ]
    return settings.model_copy(
        update={
            "api": settings.api.model_copy(update={"tokens": tokens}),
            "scorer": settings.scorer.model_copy(update={"model_follow_seconds": 0.2}),
        }
    )


def _as(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def _candidate() -> tuple[str, Model]:
    """The default model with churn risk read from usage alone: bands move."""
    document = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())
    document["objectives"]["churn_risk"]["groups"] = {"usage": 1.0}
    text_ = yaml.safe_dump(document, sort_keys=False)
    return text_, Model.model_validate(document)


async def _bands(engine: AsyncEngine, role: str = "active") -> dict[tuple[str, str], Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT account_id, objective, band, model_version FROM scores"
                " WHERE model_role = :role"
            ),
            {"role": role},
        )
        return {(r.account_id, r.objective): (r.band, r.model_version) for r in rows}


async def _all_on(engine: AsyncEngine, version: str, role: str, count: int) -> bool:
    rows = await _bands(engine, role)
    return len(rows) == count and all(v == version for _, v in rows.values())


async def _until_all_on(engine: AsyncEngine, version: str, role: str, count: int) -> None:
    """Wait until the role's `count` scores are all of `version`; fail saying how far it got."""
    deadline = time.monotonic() + 60
    while not await _all_on(engine, version, role, count):
        if time.monotonic() > deadline:
            rows = await _bands(engine, role)
            on = sum(v == version for _, v in rows.values())
            pytest.fail(f"{on} of {count} {role} scores on {version} after 60 s ({len(rows)} rows)")
        await asyncio.sleep(0.2)


async def test_a_model_change_is_proposed_reviewed_promoted_and_restored(
    settings: Settings, engine: AsyncEngine
) -> None:
    settings = _settings(settings)
    signals = simulated_signals(40, 30, seed=21)
    yaml_text, candidate = _candidate()
    objectives = len(MODEL.objectives)
    async with running_scorer(settings, engine):
        await wait_consumed(engine, settings, await produce_signals(settings, signals))
        app = create_app(settings)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as api,
        ):
            # the database was seeded with the model file the scorer started with
            listed = (await api.get("/v1/models/proposals", headers=_as("rita"))).json()["items"]
            assert [(p["status"], p["version"], p["author"]) for p in listed] == [
                ("active", MODEL.version, "configuration")
            ]
            seeded = listed[0]["proposal_id"]

            # proposing takes the model scope and a valid model
            body = {"yaml": yaml_text, "reason": "usage alone tells churn"}
            refused = await api.post("/v1/models/proposals", json=body, headers=_as("rita"))
            assert refused.status_code == 403
            assert refused.headers["content-type"] == "application/problem+json"
            broken = {"yaml": "name: x\nfactors: 3\n", "reason": "broken"}
            invalid = await api.post("/v1/models/proposals", json=broken, headers=_as("maria"))
            assert invalid.status_code == 422, invalid.text
            made = await api.post("/v1/models/proposals", json=body, headers=_as("maria"))
            assert made.status_code == 201, made.text
            proposal = made.json()
            assert proposal["status"] == "proposed" and proposal["version"] == candidate.version
            assert proposal["based_on"] == MODEL.version
            number = proposal["proposal_id"]
            again = await api.post("/v1/models/proposals", json=body, headers=_as("dana"))
            assert again.status_code == 409  # that version is proposed already

            # its impact, before anything changes
            impact = (
                await api.get(f"/v1/models/proposals/{number}/impact", headers=_as("rita"))
            ).json()
            assert impact["accounts"] == 40 and not impact["sampled"]
            assert impact["against"] == MODEL.version
            assert "usage: 1.0" in impact["diff"]
            predicted = {
                o["objective"]: Counter(
                    {(m["from_band"], m["to_band"]): m["accounts"] for m in o["moves"]}
                )
                for o in impact["objectives"]
            }
            assert all(sum(c.values()) == 40 for c in predicted.values())
            assert any(f != t for c in predicted.values() for f, t in c), "no band would move"
            before = await _bands(engine)

            # never approved by its author; approved by someone else, it is served as shadow
            own = await api.post(f"/v1/models/proposals/{number}/approve", headers=_as("maria"))
            assert own.status_code == 403 and "someone else" in own.json()["detail"]
            approved = await api.post(
                f"/v1/models/proposals/{number}/approve",
                json={"note": "try it beside the active one"},
                headers=_as("dana"),
            )
            assert approved.status_code == 200 and approved.json()["status"] == "shadow"
            await _until_all_on(engine, candidate.version, "shadow", 40 * objectives)
            assert await _all_on(engine, MODEL.version, "active", 40 * objectives)

            # promoted: every account's active scores are the candidate's, no shadow is left
            promoted = await api.post(
                f"/v1/models/proposals/{number}/promote", json={}, headers=_as("maria")
            )
            assert promoted.status_code == 200 and promoted.json()["status"] == "active"
            await _until_all_on(engine, candidate.version, "active", 40 * objectives)
            await _until_all_on(engine, candidate.version, "shadow", 0)
            after = await _bands(engine)
            # the impact said which bands would move, and they moved so
            for objective, counts in predicted.items():
                moved = Counter(
                    (before[key][0], after[key][0]) for key in before if key[1] == objective
                )
                assert moved == counts, objective

            # the model before it, restored (a rollback needs its reason)
            old = (await api.get(f"/v1/models/proposals/{seeded}", headers=_as("rita"))).json()
            assert old["status"] == "retired"
            bare = await api.post(
                f"/v1/models/proposals/{seeded}/restore", json={}, headers=_as("dana")
            )
            assert bare.status_code == 422
            restored = await api.post(
                f"/v1/models/proposals/{seeded}/restore",
                json={"note": "the CSMs' lists got noisy"},
                headers=_as("dana"),
            )
            assert restored.status_code == 200 and restored.json()["status"] == "active"
            await _until_all_on(engine, MODEL.version, "active", 40 * objectives)
            twice = await api.post(
                f"/v1/models/proposals/{seeded}/restore", json={"note": "x"}, headers=_as("dana")
            )
            assert twice.status_code == 409  # it is active, not retired

            # every step audited, with who and why
            steps = (await api.get(f"/v1/models/proposals/{number}", headers=_as("rita"))).json()[
                "steps"
            ]
            assert [(s["step"], s["actor"], s["status_after"]) for s in steps] == [
                ("proposed", "maria", "proposed"),
                ("approved", "dana", "shadow"),
                ("promoted", "maria", "active"),
                ("retired", "dana", "retired"),
            ]
            assert steps[1]["note"] == "try it beside the active one"
            restored_steps = restored.json()["steps"]
            assert [s["step"] for s in restored_steps] == ["seeded", "retired", "restored"]
            assert restored_steps[-1]["note"] == "the CSMs' lists got noisy"
            assert app.state.models["active"].version == MODEL.version  # the API follows too


async def test_the_cli_takes_the_same_steps_under_the_same_rules(
    settings: Settings, tmp_path: Path
) -> None:
    yaml_text, candidate = _candidate()
    path = tmp_path / "candidate.yaml"
    path.write_text(yaml_text)
    run_cli(settings, "migrate")  # seeds the active model from the configured file
    made = run_cli(settings, "models", "propose", str(path), "--by", "maria", "--reason", "usage")
    assert '"status": "proposed"' in made and candidate.version in made
    own = subprocess.run(
        healthscore_argv("models", "approve", "2", "--by", "maria"),
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert own.returncode == 1 and "refused (reviewer)" in own.stderr
    run_cli(settings, "models", "approve", "2", "--by", "dana")
    run_cli(settings, "models", "promote", "2", "--by", "dana")
    lines = run_cli(settings, "models", "list").splitlines()
    assert [line.split("\t")[:3] for line in lines] == [
        ["2", "active", candidate.version],
        ["1", "retired", MODEL.version],
    ]


async def test_the_rules_hold_whoever_takes_the_steps(engine: AsyncEngine) -> None:
    """One shadow at a time (a newer approval sends the older back to `approved`, from which it
    can still be promoted); a withdrawn proposal takes no further step; a model that cannot be
    served beside the active one is refused at approval, with why."""
    at = datetime.now(UTC)
    document = yaml.safe_load(DEFAULT_MODEL_PATH.read_text())

    def variant(name: str, **aggregates: Any) -> Model:
        changed = {**document, "name": name}
        changed["aggregates"] = {**document["aggregates"], **aggregates}
        return Model.model_validate(changed)

    first, second, third = variant("first"), variant("second"), variant("third")
    async with engine.begin() as conn:
        assert await proposals.seed(conn, {"active": MODEL}, at)
        assert not await proposals.seed(conn, {"active": first}, at)  # seeded once
        a = (await proposals.propose(conn, first, "maria", "a", at)).proposal_id
        b = (await proposals.propose(conn, second, "maria", "b", at)).proposal_id
        assert (await proposals.approve(conn, a, "dana", "", at)).status == "shadow"
        assert (await proposals.approve(conn, b, "dana", "", at)).status == "shadow"
        assert (await proposals.read(conn, a)).status == "approved"
        assert (await proposals.promote(conn, a, "dana", "", at)).status == "active"
        assert (await proposals.serving(conn)).keys() == {"active", "shadow"}
        c = (await proposals.propose(conn, third, "maria", "c", at)).proposal_id
        assert (await proposals.reject(conn, c, "maria", "withdrawn", at)).status == "rejected"
        with pytest.raises(ProposalRefused) as refused:
            await proposals.approve(conn, c, "dana", "", at)
        assert refused.value.why == "status"
        sessions = {**document["aggregates"]["sessions_7d"], "half_life_days": 10}
        clashing = variant("clashing", sessions_7d=sessions)
        d = (await proposals.propose(conn, clashing, "maria", "d", at)).proposal_id
        with pytest.raises(ProposalRefused) as refused:
            await proposals.approve(conn, d, "dana", "", at)
        assert refused.value.why == "clash" and "sessions_7d" in refused.value.detail
