"""benchmarks/ads.py: the smoke run times every step of the ad chain and every part of the layout step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from ecomgen.registry import REGISTRY
from ecomgen.spec import wire
from tests.conftest import REPO_ROOT


def test_smoke_run_accounts_for_every_step_and_part(tmp_path: Path) -> None:
    # Without a configured signer the run makes a throwaway one (an integration session sets one).
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOMGEN_C2PA_")}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ads", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (data,) = tmp_path.glob("*-ads.json")
    (png,) = tmp_path.glob("*-ads.png")
    result = json.loads(data.read_text())
    steps = result["steps_ms"]
    assert set(steps) == {w.step.name for w in wire(REGISTRY["ad_creative"])} | {
        "request (whole chain, in process)"
    }
    assert all(ms > 0 for ms in steps.values())
    assert set(result["layout_parts_ms"]) == {"jpeg", "png", "webp"}
    for parts in result["layout_parts_ms"].values():
        assert all(v > 0 for v in parts.values()), parts
    assert "tiny random weights" in result["weights"] and "throwaway" in result["signer"]
    assert png.stat().st_size > 0
