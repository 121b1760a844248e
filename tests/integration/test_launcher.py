"""The `ecomgen serve` launcher and the client CLI, as a user runs them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from ecomgen.server import ServerConfig, ServerError, TritonServer
from ecomgen_client import ProductClient
from tests.conftest import REPO_ROOT, free_port

pytestmark = pytest.mark.integration


def wait_for_line(proc: subprocess.Popen, needle: str, timeout_s: float = 120) -> str:
    deadline = time.monotonic() + timeout_s
    seen = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if needle in line:
            return line
    raise AssertionError(f"{needle!r} not printed; output:\n{''.join(seen[-40:])}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_command_starts_ready_and_stops_cleanly(served, sig):
    ports = [free_port() for _ in range(3)]
    cmd = [
        sys.executable, "-m", "ecomgen", "serve", "--no-build", "--address", "127.0.0.1",
        "--repository", str(served.repository),
        "--grpc-port", str(ports[0]), "--http-port", str(ports[1]), "--metrics-port", str(ports[2]),
    ]  # fmt: skip
    # As from a plain shell: no activated venv on PATH (the Python stub must still find our packages).
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(sys.prefix)
    )
    proc = subprocess.Popen(
        cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        line = wait_for_line(proc, "ecomgen: ready")
        assert f"127.0.0.1:{ports[0]}" in line
        with ProductClient(f"127.0.0.1:{ports[0]}") as client:
            assert client.generate_products("Watches", [1]).shape == (1, 64, 48, 3)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 0
        rest = proc.stdout.read()
        assert "tritonserver stopped (exit code 0)" in rest, rest
    finally:
        if proc.poll() is None:
            proc.kill()
    # The port is free again: nothing was left behind.
    with pytest.raises(Exception):  # noqa: B017 - any connection error will do
        ProductClient(f"127.0.0.1:{ports[0]}", retries=0, timeout_s=2).generate_products(0, [0])


def test_a_broken_repository_fails_fast_with_the_log(tmp_path, served):
    """--exit-on-error and strict readiness: a model that cannot load stops startup."""
    repo = tmp_path / "cpu"
    shutil.copytree(served.repository / "cpu", repo)
    (repo / "product_gan" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    config = ServerConfig(
        repo, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port(), address="127.0.0.1"
    )
    server = TritonServer(config, log=tmp_path / "triton.log")
    with pytest.raises(ServerError, match=r"exited with code|not ready"), server:
        pass
    assert server.process is None


def test_client_cli_writes_a_png_grid(served, tmp_path):
    out = tmp_path / "dresses.png"
    cmd = [
        sys.executable,
        "-m",
        "ecomgen_client",
        "products",
        "--class",
        "Dresses",
        "--seeds",
        "0-7",
        "--url",
        served.url,
        "--out",
        str(out),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    grid = np.asarray(Image.open(out))
    assert grid.ndim == 3 and grid.shape[2] == 3
    assert grid.shape[0] >= 64 and grid.shape[1] >= 48 * 2
    bad = subprocess.run([*cmd[:5], "Socks", *cmd[6:]], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "Socks" in bad.stderr


def test_client_cli_all_classes_grid_has_one_row_per_class(served, tmp_path):
    out = tmp_path / "all.png"
    cmd = [sys.executable, "-m", "ecomgen_client", "products", "--class", "all", "--seeds", "0-3"]
    done = subprocess.run(
        [*cmd, "--url", served.url, "--out", str(out)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert np.asarray(Image.open(out)).shape == (10 * 66 + 2, 4 * 50 + 2, 3)
