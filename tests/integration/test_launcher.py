"""The `ecomgen serve` launcher and the client CLI, as a user runs them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecomgen.launcher import (
    EXIT_CONFIG,
    EXIT_OK,
    RunAs,
    ServerConfig,
    ServerError,
    TritonServer,
    group_members,
    proc_uid,
    unusable_paths,
)
from ecomgen_client import ProductClient
from tests.conftest import REPO_ROOT, free_port
from tests.integration.launcher_fixtures import is_stub, launcher, root_flags, write_repository

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
        *root_flags(),
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


def test_a_broken_repository_fails_fast_with_the_log(tmp_path):
    """--exit-on-error and strict readiness: a model that cannot load stops startup."""
    repo = write_repository(tmp_path / "repo")
    (repo / "add_one" / "1" / "model.py").write_text("this is not python\n")
    config = ServerConfig(repo, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port())
    server = TritonServer(config, log=tmp_path / "triton.log")
    # Triton 2.51 exits 1, or sometimes segfaults while unloading the models that did load.
    with (
        pytest.raises(ServerError, match=r"exited \((exit code 1|killed by SIGSEGV)\) before it was ready"),
        server,
    ):
        pass
    assert server.process is None
    assert server.pgid is not None and not server.group_pids()  # its stubs went with it


def test_the_launcher_exits_2_on_a_bad_configuration(tmp_path):
    repo = write_repository(tmp_path / "repo")
    for flags, message in (
        (["--address", "example.com"], "must be an IPv4 or IPv6 address"),
        (["--admin-apis", "shared-memory,health"], "health must stay open"),
        (["--admin-apis", "model-reposit"], "unknown API(s) model-reposit"),
        (["--tls-cert", str(tmp_path / "missing.crt"), "--tls-key", str(tmp_path / "k")], "cannot read"),
        (["--admin-key-file", str(tmp_path / "missing.key")], "cannot read the admin key file"),
    ):
        with launcher(repo, *flags, *root_flags()) as run:
            assert run.wait(30) == EXIT_CONFIG, run.output()
            assert message in run.output()
            assert "ecomgen: ready" not in run.output()


# --- privileges: the launcher started as root runs tritonserver as nobody ---------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="dropping privileges needs root")


@pytest.fixture
def public_dir():
    """A directory nobody can read (pytest's own tmp root is private to root)."""
    d = Path(tempfile.mkdtemp(prefix="ecomgen-test-"))
    d.chmod(0o755)
    yield d
    shutil.rmtree(d)


@needs_root
def test_root_launcher_runs_tritonserver_as_nobody(public_dir):
    repo = public_dir / "empty"  # no Python models: only tritonserver itself has to run as nobody
    repo.mkdir(mode=0o755)
    with launcher(repo) as run:  # no --user, no --allow-root: the default drop
        _, pid = run.wait_ready()
        assert proc_uid(pid) == 65534
        status = Path(f"/proc/{pid}/status").read_text()
        assert "\nGid:\t65534\t65534\t65534\t65534\n" in status
        assert "\nGroups:\t65534 \n" in status  # root's supplementary groups are gone
        assert "tritonserver runs as nobody (uid 65534)" in run.output()
        run.proc.send_signal(signal.SIGTERM)
        assert run.wait(60) == EXIT_OK


@needs_root
def test_python_models_run_as_nobody_or_the_launcher_says_why(public_dir):
    """The Python stubs must read the interpreter: where nobody cannot (this machine's Python
    lives under /root, mode 0700), the launcher fails with exit 2 and names the path, and
    --allow-root runs as root instead, loudly. Elsewhere every stub runs as nobody."""
    repo = write_repository(public_dir / "repo")
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    if unusable_paths(RunAs.lookup("nobody"), [("d", stdlib)]):
        with launcher(repo) as run:
            assert run.wait(60) == EXIT_CONFIG
            assert "would run as nobody (uid 65534), which cannot read" in run.output()
            assert str(stdlib) in run.output() and "--allow-root" in run.output()
        with launcher(repo, "--allow-root") as run:
            _, pid = run.wait_ready()
            assert proc_uid(pid) == 0
            assert "WARNING: tritonserver runs as root" in run.output()
    else:
        with launcher(repo) as run:
            _, pid = run.wait_ready()
            stubs = [p for p in group_members(pid) if is_stub(p)]
            assert len(stubs) == 2
            assert {proc_uid(p) for p in [pid, *stubs]} == {65534}


@needs_root
def test_tritonserver_never_runs_as_root_unless_allowed(tmp_path):
    repo = write_repository(tmp_path / "repo")
    server = TritonServer(ServerConfig(repo, user="root"))
    with pytest.raises(ServerError, match="refusing to run tritonserver as root"):
        server.prepare()
    assert TritonServer(ServerConfig(repo, user="root", allow_root=True)).prepare()


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
