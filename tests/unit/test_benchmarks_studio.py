"""benchmarks/studio.py: the smoke run measures every point, the batch tool on one and on two servers,
and where a white main image's time goes, and states the targets beside the numbers."""

from __future__ import annotations

import json
from pathlib import Path

from tests.unit.test_benchmarks_ads import run_smoke


def test_smoke_run_measures_every_point(tmp_path: Path) -> None:
    run_smoke("studio", tmp_path, timeout_s=600)  # two servers start: about a minute
    (data,) = tmp_path.glob("*-studio.json")
    (md,) = tmp_path.glob("*-studio.md")
    (png,) = tmp_path.glob("*-studio.png")
    r = json.loads(data.read_text())
    assert {(p["size"], p["concurrency"]) for p in r["cutout"]} == {
        (size, c) for size in ("512x384", "1024x768") for c in (1, 4)
    }
    assert {(p["scene"], p["format"], p["concurrency"]) for p in r["scene"]} == {
        (scene, size, c) for scene, size in (("white", "2000x2000"), ("auto", "1080x1350")) for c in (1, 8)
    }
    for p in [*r["cutout"], *r["scene"]]:
        assert p["requests"] >= p["concurrency"] and p["failures"] == 0 and p["p50_ms"] > 0, p
    one, two = sorted(r["batch"], key=lambda b: b["servers"])
    for b in (one, two):
        assert b["ok"] and b["assets"] == 2 * b["rows"] == 24 and b["assets_per_min"] > 0, b
    assert len(two["per_endpoint"]) == 2 and all(n > 0 for n in two["per_endpoint"].values())  # it spreads
    parts = r["white_parts_ms"]
    expected = {
        "decode upload",
        "network product_cutout_net",
        "matte refinement (guided filter)",
        "composition",
    }
    assert expected | {"watermark", "encoding + XMP", "C2PA signing"} <= set(parts), parts
    assert all(parts[k] > 0 for k in expected) and parts["C2PA signing"] > 0
    assert "throwaway" in r["signer"] and "tiny random weights" in r["weights"]
    text = md.read_text()
    assert "p50 ≤ 350 ms at concurrency 1" in text and "≥ 500 assets per minute" in text
    assert "python -m benchmarks.studio --smoke" in text and png.stat().st_size > 0
