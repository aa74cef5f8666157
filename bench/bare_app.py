"""The reference for bench/api.py: a bare FastAPI JSON endpoint served the same way."""

from __future__ import annotations

from fastapi import FastAPI

app = FastAPI()
BODY = {
    "account_id": "acc-000042",
    "objectives": [
        {
            "objective": o,
            "score": 72.5,
            "band": "healthy",
            "confidence": 0.9,
            "factors": [
                {
                    "factor": f"factor_{i}",
                    "raw": 1.0,
                    "sub_score": 50.0,
                    "weight": 0.1,
                    "contribution": 5.0,
                    "status": "ok",
                }
                for i in range(14)
            ],
        }
        for o in ("churn_risk", "expansion")
    ],
}


@app.get("/bare")
async def bare() -> dict[str, object]:
    return BODY
