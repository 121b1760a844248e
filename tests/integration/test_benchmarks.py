"""Benchmark tooling: the Locust failure gate over several endpoints, and seconds-long smoke runs of
compare.py (Triton vs the eager baseline) and ensemble.py (tryon's overhead from Triton's statistics)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, free_port

# Only look the package up: importing locust monkey-patches the whole test process with gevent,
# which deadlocks the asyncio/grpc.aio tests that run after this module.
if importlib.util.find_spec("locust") is None:
    pytest.skip("benchmark dependencies: pip install -r benchmarks/requirements.txt", allow_module_level=True)
pytestmark = pytest.mark.integration

LOCUSTFILE = REPO_ROOT / "benchmarks" / "locustfile.py"


def test_locust_gate_fails_when_no_server_listens(tmp_path: Path) -> None:
    ports = [free_port(), free_port()]  # bound and released: nothing listens there
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(LOCUSTFILE),
            "--headless",
            "--only-summary",
            "-u",
            "2",
            "-r",
            "2",
            "-t",
            "2s",
            "--host",
            ",".join(f"127.0.0.1:{p}" for p in ports),  # two endpoints: users take them round robin
            "--tags",
            "product_gan",
            "--csv",
            str(tmp_path / "gate"),
            "--p99-budget-ms",
            "10000",
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=240,  # a fresh venv's first locust start is slow on a busy 2-core runner
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "requests failed" in proc.stderr
    assert "UNAVAILABLE" in proc.stderr
    for p in ports:  # each user's failure is reported under its own endpoint
        assert f"@127.0.0.1:{p}" in proc.stderr
    assert (tmp_path / "gate_stats.csv").exists()


def test_compare_smoke_writes_report(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.compare", "--smoke", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    (report,) = tmp_path.glob("*-smoke.md")
    text = report.read_text()
    assert "| 4 | triton |" in text and "| 4 | baseline |" in text
    assert "images/s ratio" in text
    assert "GPU" in text and "Weights" in text and "python -m benchmarks.compare --smoke" in text
    assert len(list(tmp_path.glob("*-smoke-*.png"))) == 2


def test_ensemble_benchmark_smoke_reports_tryon_overhead(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.ensemble",
            "--model",
            "tryon",
            "--requests",
            "8",
            "--concurrency",
            "2",
            "--seconds",
            "3",
            "--no-wait-quiet",
            "--out",
            str(tmp_path),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (report,) = tmp_path.glob("*-tryon.md")
    text = report.read_text()
    assert "Ratio ensemble / sum of steps" in text
    for step in ("tryon_pre", "tryon_parser", "tryon_warp", "tryon_synthesis", "tryon_post"):
        assert f"| {step} |" in text
    row = next(line for line in text.splitlines() if line.startswith("| 2 |"))
    assert float(row.split("|")[2]) > 0  # requests (pairs) per second under load
    assert row.split("|")[6].strip() == "0"  # no failures


def test_ensemble_benchmark_refuses_a_fused_model(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.ensemble", "--model", "product_gan", "--out", str(tmp_path)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 2 and "not an ensemble on the cpu target" in proc.stderr
