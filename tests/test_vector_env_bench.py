"""bench/vector_env.py's page from hand-made rates: the environment's seconds for 5 agents beside SB3's run."""

from __future__ import annotations

import bench.vector_env


def _rates(gymnasium: float, sync: float, parallel: float) -> dict:
    kinds = {"gymnasium": gymnasium, "sync": sync, "async": 1_000.0, "parallel": parallel}
    return {kind: {"median": value, "min": value * 0.9, "max": value * 1.1} for kind, value in kinds.items()}


def test_the_page_turns_rates_into_the_agents_seconds_in_the_environment() -> None:
    results = {
        "machine": {"cores": 2, "torch_threads": 1, "date": "2026-12-08 01:32"}, "copies": 50, "steps": 400,
        "workers": 2, "repeats": 3,
        "budgets": {"Acrobot-v1": {"frames_per_agent": 100_000, "sb3_s": 77.1, "sb3_date": "2026-12-07 23:55"}},
        "ids": {"Acrobot-v1": _rates(gymnasium=20_000.0, sync=10_000.0, parallel=5_000.0)},
    }  # fmt: skip
    page = bench.vector_env.report(results)
    # 5 agents x 100,000 frames: 25 s at 20,000 frames a second, 50 s at 10,000, 100 s at 5,000.
    assert "| Acrobot-v1 | 100,000 | 25.0 | 50.0 | 100.0 | 77.1, 2026-12-07 23:55 |" in page
    assert "| Acrobot-v1 | 20,000 [18,000-22,000] | 10,000 [9,000-11,000] | 1,000 [900-1,100] | 5,000" in page
