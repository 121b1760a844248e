"""benchmarks/ads.py: the smoke run times every step of the ad chain and every part of the layout step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def run_smoke(module: str, out: Path, timeout_s: float = 300) -> None:
    """``python -m benchmarks.<module> --smoke --out <out>``, which must exit 0. Without a configured
    C2PA signer the run makes a throwaway one (an integration session sets one)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECOMGEN_C2PA_")}
    cmd = [sys.executable, "-m", f"benchmarks.{module}", "--smoke", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def test_smoke_run_accounts_for_every_step_and_part(tmp_path: Path) -> None:
    run_smoke("ads", tmp_path)
    (data,) = tmp_path.glob("*-ads.json")
    (png,) = tmp_path.glob("*-ads.png")
    result = json.loads(data.read_text())
    generated, uploaded = result["routes_ms"]["generated product"], result["routes_ms"]["uploaded photo"]
    # A generated product runs the generator and the x4 network; an uploaded photo runs neither,
    # only the decoder and the cut-out (the route is chosen per request, not by an ensemble).
    assert {"network product_gan_generator", "network sr_network"} <= set(generated)
    assert "network product_cutout_net" not in generated and "decode upload" not in generated
    assert {"network product_cutout_net", "decode upload", "matte refinement (guided filter)"} <= set(
        uploaded
    )
    assert "network product_gan_generator" not in uploaded and "network sr_network" not in uploaded
    for route in (generated, uploaded):
        assert all(ms > 0 for ms in route.values()), route
        assert route["layout (render_ad)"] > 0 and route["labelling + encoding"] > 0
    assert set(result["labelling_parts_ms"]) == {"jpeg", "png", "webp"}
    for parts in result["labelling_parts_ms"].values():
        assert all(v > 0 for v in parts.values()), parts
    assert "tiny random weights" in result["weights"] and "throwaway" in result["signer"]
    assert png.stat().st_size > 0
