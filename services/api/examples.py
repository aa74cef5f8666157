"""Example response bodies for the OpenAPI document (one per successful response)."""

from __future__ import annotations

from typing import Any

FACTOR = {
    "factor": "login_frequency",
    "group": "usage",
    "raw": 27.4,
    "sub_score": 84.6,
    "weight": 0.12,
    "contribution": 11.3,
    "status": "ok",
    "last_data_at": "2026-11-24T09:12:00Z",
}
OVERRIDE = {
    "override_id": "3f1c8c1e-5b7a-4d5e-9a51-0d7c3c1b2a10",
    "account_id": "acc-000042",
    "action": "pin",
    "objective": "churn_risk",
    "value": 20.0,
    "reason": "renewal call went badly",
    "author": "csm@example.com",
    "created_at": "2026-11-24T09:30:00Z",
    "expires_at": "2026-12-24T00:00:00Z",
    "status": "active",
    "revoked_at": None,
    "revoked_by": None,
    "revoke_reason": None,
}
HEALTH = {
    "account_id": "acc-000042",
    "name": "Acme Health",
    "industry": "healthcare",
    "region": "emea",
    "tier": "enterprise",
    "lifecycle_stage": "mature",
    "segment": "enterprise",
    "owner": "dana@example.com",
    "parent_account_id": None,
    "mrr": 1250.5,
    "currency": "USD",
    "last_event_at": "2026-11-24T09:12:00Z",
    "updated_at": "2026-11-24T09:12:01Z",
    "freshness": {
        "usage": {"last_data_at": "2026-11-24T09:12:00Z", "stale": False},
        "support": {"last_data_at": "2026-11-20T15:00:00Z", "stale": False},
        "billing": {"last_data_at": "2026-09-15T00:00:00Z", "stale": True},
    },
    "objectives": [
        {
            "objective": "churn_risk",
            "model_role": "active",
            "model_version": "default@5ea8e56d6c7e",
            "score": 35.0,
            "band": "at_risk",
            "confidence": 0.83,
            "weighted_score": 48.2,
            "factors": [FACTOR],
            "caps": [
                {
                    "factor": "days_since_last_use",
                    "max": 35.0,
                    "reason": "nobody has used the product for about two weeks",
                }
            ],
            "overrides": [],
            "probability": 0.41,
            "probability_horizon_days": 90,
            "probability_outcome": "churn",
            "evaluated_at": "2026-11-24T09:12:01Z",
            "changed_at": "2026-11-23T06:00:00Z",
            "actions": [
                {
                    "factor": "days_since_last_use",
                    "group": "usage",
                    "points": 31.5,
                    "sub_score": 7.0,
                    "target_sub_score": 100.0,
                    "advice": "Nobody has used the product lately: reach the champion this "
                    "week and agree a next step.",
                }
            ],
        }
    ],
    "active_overrides": [],
}
HISTORY = {
    "account_id": "acc-000042",
    "items": [
        {
            "id": 981,
            "objective": "churn_risk",
            "model_role": "active",
            "model_version": "default@5ea8e56d6c7e",
            "at": "2026-11-23T06:00:00Z",
            "old_score": 71.2,
            "new_score": 35.0,
            "old_band": "healthy",
            "new_band": "at_risk",
            "probability": 0.41,
            "cause": "time",
            "top_movers": [
                {
                    "factor": "days_since_last_use",
                    "group": "usage",
                    "delta": -14.1,
                    "old_contribution": 15.2,
                    "new_contribution": 1.1,
                    "old_sub_score": 98.0,
                    "new_sub_score": 7.0,
                    "status": "ok",
                }
            ],
            "signal_ids": [],
        }
    ],
    "next_cursor": "WyIyMDI2LTExLTIzVDA2OjAwOjAwKzAwOjAwIiw5ODFd",
}
ACCOUNTS = {
    "items": [
        {
            "account_id": "acc-000042",
            "name": "Acme Health",
            "industry": "healthcare",
            "tier": "enterprise",
            "region": "emea",
            "segment": "enterprise",
            "owner": "dana@example.com",
            "parent_account_id": None,
            "objective": "churn_risk",
            "score": 35.0,
            "band": "at_risk",
            "confidence": 0.83,
            "probability": 0.41,
            "change": -36.2,
            "changed_at": "2026-11-23T06:00:00Z",
            "stale_sources": ["billing"],
        }
    ],
    "next_cursor": None,
}
ACCEPTED = {
    "override_id": "3f1c8c1e-5b7a-4d5e-9a51-0d7c3c1b2a10",
    "status": "accepted",
    "detail": "recorded; the scorer applies it within seconds",
}
PREVIEW = {
    "account_id": "acc-000042",
    "at": "2026-11-30T09:12:03Z",
    "objectives": [
        {
            "objective": "churn_risk",
            "score": 64.2,
            "band": "neutral",
            "preview_score": 35.0,
            "preview_band": "at_risk",
            "confidence": 0.88,
        }
    ],
}
MODELS = {
    "models": [
        {
            "role": "active",
            "version": "default@5ea8e56d6c7e",
            "definition": {"name": "default", "objectives": {"churn_risk": {}}},
        }
    ]
}


def ok(example: Any, status: int = 200) -> dict[int | str, dict[str, Any]]:
    return {status: {"content": {"application/json": {"example": example}}}}


WEBHOOK = {
    "webhook_id": "6f1d2a9e-3c4b-4e8f-9a0b-1c2d3e4f5a6b",
    "url": "https://hooks.example.com/account-health",
    "description": "CS alerts: churn risk turning at_risk",
    "mode": "structured",
    "types": ["io.account-health.band.changed"],
    "objectives": ["churn_risk"],
    "from_bands": [],
    "to_bands": ["at_risk"],
    "segments": [],
    "owners": [],
    "replays": False,
    "enabled": True,
    "disabled_reason": None,
    "created_by": "ops@example.com",
    "created_at": "2026-12-01T09:00:00Z",
    "updated_at": "2026-12-01T09:00:00Z",
    "deliveries": {"delivered": 41, "dead": 1},
}
WEBHOOK_CREATED = {
    **WEBHOOK,
    "deliveries": {},
    "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSwBUvXbPnZsaA=",
}
DELIVERY = {
    "event_id": "1b7c5e0e-8c55-5a3e-b8f6-2f0c8f7d9a11",
    "event_type": "io.account-health.band.changed",
    "account_id": "acc-000042",
    "status": "dead",
    "attempts": 9,
    "next_attempt_at": None,
    "last_status_code": 503,
    "last_error": "HTTP 503: upstream unavailable",
    "created_at": "2026-12-02T10:00:00Z",
    "finished_at": "2026-12-02T21:04:00Z",
}
PORTFOLIO = {
    "objective": "churn_risk",
    "bands": ["unknown", "at_risk", "neutral", "healthy"],
    "total": {
        "key": None,
        "accounts": 1200,
        "mrr": {"USD": 1_540_000.0},
        "bands": [
            {"band": "at_risk", "accounts": 212, "mrr": {"USD": 187_400.0}},
            {"band": "neutral", "accounts": 388, "mrr": {"USD": 402_600.0}},
            {"band": "healthy", "accounts": 600, "mrr": {"USD": 950_000.0}},
        ],
    },
    "by": "owner",
    "groups": [
        {
            "key": "dana@example.com",
            "accounts": 48,
            "mrr": {"USD": 96_000.0},
            "bands": [
                {"band": "at_risk", "accounts": 9, "mrr": {"USD": 12_300.0}},
                {"band": "healthy", "accounts": 39, "mrr": {"USD": 83_700.0}},
            ],
        }
    ],
    "days": [
        {
            "day": "2026-12-06",
            "bands": [
                {"band": "at_risk", "accounts": 205, "mrr": {"USD": 181_000.0}},
                {"band": "neutral", "accounts": 391, "mrr": {"USD": 405_000.0}},
                {"band": "healthy", "accounts": 604, "mrr": {"USD": 954_000.0}},
            ],
        }
    ],
    "worsened": [
        {
            "account_id": "acc-000042",
            "name": "Acme Health",
            "owner": "dana@example.com",
            "old_band": "healthy",
            "new_band": "at_risk",
            "score": 35.0,
            "at": "2026-12-06T06:00:00Z",
        }
    ],
}
_CHILD = {
    "account_id": "acme-emea",
    "name": "Acme EMEA",
    "owner": "dana@example.com",
    "mrr": 4000.0,
    "currency": "USD",
    "objective": "churn_risk",
    "score": 31.0,
    "band": "at_risk",
}
CHILDREN = {
    "account_id": "acme",
    "rollups": [
        {
            "objective": "churn_risk",
            "score": 58.3,
            "band": "neutral",
            "children": 3,
            "weakest": _CHILD,
        }
    ],
    "items": [_CHILD],
}


OUTCOME = {
    "source": "salesforce",
    "outcome_id": "opp-0061",
    "account_id": "acc-000042",
    "outcome": "renewal",
    "at": "2026-11-30T00:00:00Z",
    "note": "renewed for two years",
    "recorded_by": "crm-sync",
    "recorded_at": "2026-11-30T08:00:00Z",
    "voided_at": None,
    "voided_by": None,
    "void_reason": None,
}

_QUALITY_POINT = {
    "measured_at": "2026-12-07T09:00:00Z",
    "model_version": "default@5ea8e56d6c7e",
    "samples": 118_000,
    "accounts": 9_400,
    "adverse": 2_100,
    "adverse_accounts": 310,
    "roc_auc": 0.81,
    "roc_auc_low": 0.78,
    "roc_auc_high": 0.84,
    "brier": 0.061,
    "brier_low": 0.055,
    "brier_high": 0.067,
    "expected_roc_auc": 0.83,
    "expected_brier": 0.058,
    "expected_accounts": 10_000,
    "lead_time_days": 21.0,
    "warned": 240,
    "churns": 310,
}

QUALITY = {
    "items": [
        {
            "objective": "churn_risk",
            "model_role": "active",
            "outcome": "churn",
            "window_days": 90.0,
            "horizon_days": 90.0,
            "latest": _QUALITY_POINT,
            "reliability": [{"predicted": 0.05, "observed": 0.04, "samples": 80_000}],
            "trend": [_QUALITY_POINT],
        }
    ]
}

PROPOSAL = {
    "proposal_id": 7,
    "version": "default@3f9a1c2b7d4e",
    "name": "default",
    "status": "shadow",
    "based_on": "default@9d1e0f2a3b4c",
    "author": "maria",
    "reason": "support tickets weigh more: three churns this quarter began with them",
    "proposed_at": "2026-12-01T09:00:00Z",
    "reviewer": "dana",
    "reviewed_at": "2026-12-01T11:30:00Z",
    "review_note": "agreed; watch the shadow's quality for a week",
    "updated_at": "2026-12-01T11:30:00Z",
    "steps": [
        {
            "step": "proposed",
            "actor": "maria",
            "note": "support tickets weigh more: three churns this quarter began with them",
            "status_before": None,
            "status_after": "proposed",
            "at": "2026-12-01T09:00:00Z",
        },
        {
            "step": "approved",
            "actor": "dana",
            "note": "agreed; watch the shadow's quality for a week",
            "status_before": "proposed",
            "status_after": "shadow",
            "at": "2026-12-01T11:30:00Z",
        },
    ],
}

IMPACT = {
    "proposal_id": 7,
    "against": "default@9d1e0f2a3b4c",
    "accounts": 2000,
    "sampled": False,
    "objectives": [
        {
            "objective": "churn_risk",
            "moves": [
                {"from_band": "healthy", "to_band": "healthy", "accounts": 1412},
                {"from_band": "healthy", "to_band": "watch", "accounts": 37},
            ],
            "moved": [
                {
                    "account_id": "acc-000042",
                    "from_band": "healthy",
                    "to_band": "watch",
                    "score_before": 71.2,
                    "score_after": 63.9,
                }
            ],
        }
    ],
    "added": [],
    "removed": [],
    "diff": (
        "--- default@9d1e0f2a3b4c\n+++ default@3f9a1c2b7d4e\n@@ -40,3 +40,3 @@\n"
        "-      support: 0.2\n+      support: 0.3\n"
    ),
}
