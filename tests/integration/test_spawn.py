"""ecomgen.launcher.spawn and .sampler against the real launcher on the tiny repository: ready banner,
tritonserver pid, URLs, the process tree by role with its /dev/shm regions, a clean SIGTERM stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from ecomgen.launcher import EXIT_CONFIG, EXIT_OK, STUB_ROLE, Launched, LaunchError, ProcessTree, wait_ready
from ecomgen.launcher.spawn import free_port
from tests.conftest import REPO_ROOT
from tests.integration.launcher_fixtures import infer_add_one, root_flags, wait_dead, write_repository

pytestmark = pytest.mark.integration


def test_launched_serves_samples_and_drains(tmp_path: Path) -> None:
    repo = write_repository(tmp_path / "repo")
    log = tmp_path / "launcher.log"
    with Launched(repo, *root_flags(), cwd=REPO_ROOT, log=log, ready_timeout_s=120) as server:
        assert server.triton_pid in server.pids()
        assert wait_ready(server.http_url, 5) >= 0 and wait_ready(server.grpc_url, 5, model="add_one") >= 0
        import tritonclient.grpc as grpcclient

        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            assert infer_add_one(client, [1.0, 2.0]).tolist() == [[2.0, 3.0]]
        tree = ProcessTree(server.triton_pid)
        sample = tree.sample()
        roles = {p.role for p in sample.processes}
        assert {"tritonserver", f"{STUB_ROLE}add_one", f"{STUB_ROLE}slow"} <= roles, roles
        assert len(sample.pids(STUB_ROLE)) == 2
        assert sample.cpu_s > 0 and 0 < sample.pss <= sample.rss
        assert sample.shm > 0  # the two stubs' regions in /dev/shm
        assert server.metrics_url.endswith(f":{server.ports[2]}/metrics")
        members = server.pids()
    assert server.proc is not None and server.proc.returncode == EXIT_OK, server.output()[-2000:]
    assert not wait_dead(members, 15)
    assert "ecomgen: ready" in log.read_text()


def test_ecomgen_serve_without_build(tmp_path: Path) -> None:
    """``serve=True``: ``ecomgen serve --no-build`` on a repository root holding ``cpu/``."""
    write_repository(tmp_path / "root" / "cpu")
    with Launched(tmp_path / "root", *root_flags(), serve=True, cwd=REPO_ROOT, ready_timeout_s=120) as server:
        assert "ecomgen serve --no-build" in " ".join(server.cmd[1:]).replace("-m ", "")
        assert wait_ready(server.grpc_url, 5, model="slow") >= 0
        assert ProcessTree(server.pid).sample(memory=False).cpu_by_role("stub:")
    assert server.wait(5) == EXIT_OK


def test_a_launcher_that_exits_is_reported_with_its_output(tmp_path: Path) -> None:
    server = Launched(tmp_path / "missing", cwd=REPO_ROOT)
    with pytest.raises(LaunchError, match="not printed"):
        server.__enter__()
    assert server.proc is not None and server.proc.returncode == EXIT_CONFIG
    assert "not a directory" in server.output()


def test_wait_ready_gives_up_on_a_port_nobody_serves() -> None:
    with pytest.raises(TimeoutError):
        wait_ready(f"http://127.0.0.1:{free_port()}", timeout_s=0.5, interval_s=0.1)
