"""The catalogue batch tool (``ecomgen-client batch``) against the real server.

A 50-row fixture catalogue (``tests/fixtures/catalogue/catalogue.csv``: 44 rows with the fixture
photos, 4 generated products, a row whose photo is missing and one with an unknown class) makes every
asset and a manifest; a second run writes nothing; the bad rows are reported without stopping the
rest; and SIGINT to a running ``ecomgen-client batch`` leaves a manifest whose every line names a
complete file. The throughput target (cut-out + white main image, >= 500 assets/min on one server) is
a benchmark's business, not checked here.

The formats are the smallest the plan allows (1080x1080) to keep the run short on a CPU host.
"""

from __future__ import annotations

import hashlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from ecomgen.registry import REGISTRY
from ecomgen_client.batch import AssetPlan, Summary, run_batch

ROOT = Path(__file__).resolve().parents[2]
CATALOGUE = ROOT / "tests" / "fixtures" / "catalogue" / "catalogue.csv"
SIZE = "1080x1080"
PLAN = "cutout,white,scenes:2,ads:1080x1080,inventory"
PHOTO_ROWS, GENERATED_ROWS = 44, 4
PER_PHOTO_ROW = ["cutout", "white", "scene-1", "scene-2", f"ad-{SIZE}", "inventory"]
TOTAL = PHOTO_ROWS * len(PER_PHOTO_ROW) + GENERATED_ROWS * (len(PER_PHOTO_ROW) - 1)
COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        not {"product_cutout", "product_scene"} <= set(REGISTRY.names()),
        reason="product_cutout / product_scene are not in ecomgen.registry.REGISTRY yet (server side)",
    ),
]


def plan(spec: str = PLAN) -> AssetPlan:
    return AssetPlan.parse(spec, white_format=SIZE, scene_format=SIZE)


def manifest(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines() if line.strip()]


def assert_consistent(out: Path) -> list[dict[str, Any]]:
    """Every line names a complete file with that sha256 and size; no asset twice."""
    entries = manifest(out)
    for e in entries:
        data = (out / e["file"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == e["sha256"] and len(data) == e["bytes"], e["file"]
    assert len({(e["sku"], e["asset"]) for e in entries}) == len(entries)
    return entries


@pytest.fixture(scope="module")
def first_run(served, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Summary]:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("studio-batch")
    summary = run_batch(CATALOGUE, out, [served.url], plan(), concurrency=8, progress=False)
    return out, summary


def test_every_asset_is_written_with_a_manifest(first_run: tuple[Path, Summary]) -> None:
    out, summary = first_run
    assert not summary.interrupted and summary.failed == 0, summary.report()
    assert (summary.rows, summary.written, summary.no_photo) == (50, TOTAL, GENERATED_ROWS)
    entries = assert_consistent(out)
    assert len(entries) == TOTAL
    assert sorted(p.name for p in (out / "SKU-1000").iterdir()) == sorted(
        ["cutout.png", "white.png", "scene-1.png", "scene-2.png", f"ad-{SIZE}.jpg", "inventory.png"]
    )
    assert not (out / "GEN-1" / "cutout.png").exists() and (out / "GEN-1" / "white.png").exists()
    for e in entries:
        assert e["model"]["version"], e  # read from the server's model metadata
        assert e["endpoint"] in summary.per_endpoint and e["client_version"], e


def test_cutouts_are_labelled_rgba_at_the_photos_size(first_run: tuple[Path, Summary]) -> None:
    from ecomgen.creative.provenance import read_xmp, xmp_source_type

    out, _ = first_run
    data = (out / "SKU-1013" / "cutout.png").read_bytes()  # ../viton/test/cloth/000020_1.jpg
    with (
        Image.open(io.BytesIO(data)) as im,
        Image.open(CATALOGUE.parent / "../viton/test/cloth/000020_1.jpg") as src,
    ):
        assert im.mode == "RGBA" and im.size == src.size
    assert xmp_source_type(read_xmp(data)) == COMPOSITE


def test_scenes_and_main_images_are_the_asked_size_and_labelled(first_run: tuple[Path, Summary]) -> None:
    from ecomgen.creative.provenance import AI_SOURCE_TYPES, read_xmp, xmp_source_type

    out, _ = first_run
    for sku in ("SKU-1000", "GEN-2"):
        for name in ("white.png", "scene-1.png", "scene-2.png", f"ad-{SIZE}.jpg"):
            data = (out / sku / name).read_bytes()
            with Image.open(io.BytesIO(data)) as im:
                assert im.size == (1080, 1080), (sku, name)
            assert xmp_source_type(read_xmp(data)) in AI_SOURCE_TYPES, (sku, name)


def test_bad_rows_are_reported_and_the_rest_made(first_run: tuple[Path, Summary]) -> None:
    out, summary = first_run
    reasons = {b.sku: b.reason for b in summary.bad_rows}
    assert set(reasons) == {"BAD-PHOTO", "BAD-CLASS"}
    assert reasons["BAD-PHOTO"].startswith("photo not found") and "unknown class" in reasons["BAD-CLASS"]
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert {(e["kind"], e["line"], e["sku"]) for e in errors} == {
        ("bad_row", 50, "BAD-PHOTO"),
        ("bad_row", 51, "BAD-CLASS"),
    }
    assert not (out / "BAD-PHOTO").exists() and not (out / "BAD-CLASS").exists()


def test_a_second_run_writes_nothing(served, first_run: tuple[Path, Summary]) -> None:  # type: ignore[no-untyped-def]
    out, _ = first_run
    before = (out / "manifest.jsonl").read_bytes()
    again = run_batch(CATALOGUE, out, [served.url], plan(), progress=False)
    assert (again.written, again.resumed, again.failed) == (0, TOTAL, 0), again.report()
    assert (out / "manifest.jsonl").read_bytes() == before


def test_sigint_leaves_a_consistent_manifest_and_a_rerun_finishes(served, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out"
    spec = "cutout,white,scenes:2"
    argv = [sys.executable, "-m", "ecomgen_client", "batch", str(CATALOGUE), "--out", str(out)]
    argv += ["--assets", spec, "--white-format", SIZE, "--scene-format", SIZE, "--url", served.url]
    proc = subprocess.Popen(
        [*argv, "--concurrency", "4", "--no-progress"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # As from a terminal: a shell's background job (`make test &`) ignores SIGINT, and a child
        # would inherit that.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            path = out / "manifest.jsonl"
            if path.exists() and len(path.read_text().splitlines()) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, f"the batch ended before it could be interrupted: {proc.communicate()}"
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, (stdout, stderr)
    assert "interrupted" in stdout
    listed = assert_consistent(out)
    total = PHOTO_ROWS * 4 + GENERATED_ROWS * 3
    assert 5 <= len(listed) < total
    rest = run_batch(CATALOGUE, out, [served.url], plan(spec), progress=False)
    assert rest.resumed == len(listed) and rest.written + rest.resumed == total, rest.report()
    assert len(assert_consistent(out)) == total
    assert not list(out.glob("*/.*ecomgen-tmp"))
