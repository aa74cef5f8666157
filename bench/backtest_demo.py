"""`make backtest-demo`: simulate a customer base with known churn, fit a model, back-test both.

Runs the real commands a model owner would run, in order:
  healthscore simulate --out   (5,000 accounts, 200 days, ground-truth churn dates)
  healthscore fit              (churn_risk shapes and weights on 70% of the accounts' earlier
                                as-of times; judged on the other 30%'s later ones)
  healthscore backtest         (default and fitted model side by side; report + plots)
and prints, last, one JSON line: on fit's grouped split (accounts never trained on, as-of times
after every training label), the churn-risk ROC AUC with its 95% interval of the default model,
the fitted one and recency alone; the back-test's AUCs on its later as-of times; the back-test's
own wall time. Output goes to reports/backtest-demo/.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import orjson

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports" / "backtest-demo"
HEALTHSCORE = str(Path(sys.executable).with_name("healthscore"))
ACCOUNTS = int(os.environ.get("DEMO_ACCOUNTS", "5000"))
DAYS = int(os.environ.get("DEMO_DAYS", "200"))


def run(*args: str) -> str:
    print("$ healthscore", " ".join(args), flush=True)
    env = {**os.environ, "HEALTHSCORE_LOG__LEVEL": "WARNING"}
    done = subprocess.run([HEALTHSCORE, *args], env=env, check=True, capture_output=True, text=True)
    print(done.stdout.strip(), flush=True)
    return done.stdout


def main() -> None:
    data = OUT / "data"
    started = time.perf_counter()
    run(
        "simulate", "--out", str(data), "--accounts", str(ACCOUNTS), "--days", str(DAYS),
        "--intensity", "0.1", "--seed", "2026", "--start", "2026-01-01",
    )  # fmt: skip
    inputs = ["--events", str(data / "events.jsonl"), "--outcomes", str(data / "outcomes.csv")]
    fitted = OUT / "default-fitted.yaml"
    held_out = orjson.loads(run("fit", *inputs, "--out", str(fitted)).strip().splitlines()[-1])[
        "test"
    ]
    backtest_started = time.perf_counter()
    run(
        "backtest", *inputs, "--model", str(ROOT / "shared/scoring/models/default.yaml"),
        "--model", str(fitted), "--out", str(OUT / "report"),
    )  # fmt: skip
    backtest_seconds = time.perf_counter() - backtest_started
    summary = orjson.loads((OUT / "report" / "summary.json").read_bytes())
    auc = {
        label: model["objectives"]["churn_risk"]["test"]["roc_auc"]
        for label, model in summary["models"].items()
    }
    lead = summary["models"]["default"]["objectives"]["churn_risk"]["lead_time"]
    print(f"report: {OUT / 'report' / 'report.md'}")
    print(
        orjson.dumps(
            {
                "bench": "backtest",
                "accounts": summary["accounts"],
                "events": summary["events"]["lines"],
                "grouped_split": {
                    "accounts": held_out["accounts"],
                    **{
                        name: [held_out[which]["roc_auc"], held_out[which]["roc_auc_ci95"]]
                        for name, which in (
                            ("auc_default", "input"),
                            ("auc_fitted", "fitted"),
                            ("auc_recency", "baseline_recency"),
                        )
                    },
                },
                "auc_default": auc["default"],
                "auc_fitted": auc["default-fitted"],
                "warned_before_churn_default": lead["warned_share"],
                "seconds": round(backtest_seconds, 1),
                "total_seconds": round(time.perf_counter() - started, 1),
            }
        ).decode()
    )


if __name__ == "__main__":
    main()
