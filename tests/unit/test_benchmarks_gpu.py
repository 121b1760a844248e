"""benchmarks/gpu.py: the CPU --dry-run covers every registered network; the time budget stops it cleanly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import gpu
from ecomgen.registry import REGISTRY
from tests.conftest import REPO_ROOT


def run_gpu(tmp_path: Path, *args: str) -> tuple[dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--out", str(tmp_path), *args],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = tmp_path.glob("*-gpu-dry-run.md")
    (data,) = tmp_path.glob("*-gpu-dry-run.json")
    return json.loads(data.read_text()), report.read_text()


def test_dry_run_measures_every_registered_network(tmp_path: Path) -> None:
    data, text = run_gpu(tmp_path)
    names = {r["network"] for r in data["networks"]}
    assert names == set(REGISTRY.networks())
    assert data["dry_run"] and data["machine"]["device"] == "cpu"
    for r in data["networks"]:
        assert not r["errors"], r
        assert r["batches"] == [1, 2] or r["batches"] == [1]
        fp32 = r["images_per_s"]["fp32"]
        assert set(map(int, fp32)) == set(r["batches"]) and all(v > 0 for v in fp32.values())
        assert r["images_per_s"]["fp16"], r["network"]
        psnr = r["parity"]["fp16"]["psnr_db"]
        assert psnr is not None and psnr > 0
    skipped = {(s["network"], s["mode"]): s["reason"] for s in data["skipped"]}
    for name in names:
        assert "CUDA only" in skipped[(name, "fp16+graphs")]
        assert "--dry-run" in skipped[(name, "fp16+compile")]
    assert "nothing here ran on a GPU" in text
    assert (
        "| network | weights | batch | fp32 eager | fp16 eager | fp16 + CUDA graphs | fp16 + torch.compile |"
        in text
    )
    for name in names:
        assert f"| {name} | tiny | 1 |" in text


def test_time_budget_skips_and_reports(tmp_path: Path) -> None:
    name = next(iter(REGISTRY.networks()))
    data, text = run_gpu(tmp_path, "--budget-s", "0", "--networks", name, "--modes", "fp32", "fp16")
    (r,) = data["networks"]
    assert r["images_per_s"]["fp32"] == {} and r["images_per_s"]["fp16"] == {}
    reasons = [s["reason"] for s in data["skipped"] if s["network"] == name]
    assert len(reasons) == 2 and all(x.startswith("time budget") for x in reasons)
    assert f"- {name} fp32 (batches 1, 2): time budget" in text


def test_unknown_network_is_an_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", "--dry-run", "--out", str(tmp_path), "--networks", "nope"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "unknown networks ['nope']" in proc.stderr


def test_batch_sweep_is_powers_of_two_up_to_max_batch() -> None:
    _, net = REGISTRY.networks()[next(iter(REGISTRY.networks()))]
    sizes = gpu.batch_sizes(net, None)
    assert sizes[0] == 1 and sizes[-1] == net.max_batch_size
    assert all(b & (b - 1) == 0 for b in sizes[:-1])
    assert gpu.batch_sizes(net, [1, 10_000]) == [1, net.max_batch_size]


@pytest.mark.parametrize("name", list(REGISTRY.networks()))
def test_parity_is_exact_for_identical_outputs_and_drops_for_noise(name: str) -> None:
    _, net = REGISTRY.networks()[name]
    if any(t.variable for t in net.outputs):
        pytest.skip("variable output dims: covered by the dry run")
    rng = np.random.default_rng(0)
    ref = [torch.from_numpy(rng.uniform(0, 1, (2, *t.dims)).astype(np.float32)) for t in net.outputs]
    same = gpu.parity(net, ref, ref, 2)
    assert np.isinf(same.psnr_db) and same.max_uint8_diff == 0 and same.nonfinite == 0 and same.passed
    noisy = [r + 0.2 * torch.randn_like(r) for r in ref]
    noisy[0].view(-1)[0] = float("nan")
    worse = gpu.parity(net, noisy, ref, 2)
    assert worse.psnr_db < 40 and worse.nonfinite == 1 and not worse.passed
