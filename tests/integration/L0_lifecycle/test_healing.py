"""A killed model process is healed: the launcher sees the stub die, unloads its model (and the
ensembles that use it), so readiness says false, reloads it, and readiness says true again;
requests after that succeed. SIGTERM while a stub is dead drains and exits 0, never hangs.

Each test runs ``python -m ecomgen.launcher`` on the tiny repository of launcher_fixtures, under
load, and kills a stub with SIGKILL (as the OOM killer would).
"""

from __future__ import annotations

import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from ecomgen.launcher import EXIT_DRAIN, EXIT_OK
from tests.integration.launcher_fixtures import (
    Load,
    alive,
    group_members,
    infer_add_one,
    is_stub,
    launcher,
    proc_cmdline,
    root_flags,
    wait_dead,
    write_repository,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("healing_repo"))


def _stub_of(model: str, triton_pid: int) -> int:
    (pid,) = [
        p
        for p in group_members(os.getpgid(triton_pid))
        if is_stub(p) and f"/{model}/1/model.py" in " ".join(proc_cmdline(p))
    ]
    return pid


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(r.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _watch_readiness(http: str, model: str, until: float) -> list[tuple[float, bool, bool]]:
    """(time, model ready, server ready) every few ms until ``until`` or back to ready after a dip."""
    seen: list[tuple[float, bool, bool]] = []
    while time.monotonic() < until:
        m = _ready(f"{http}/v2/models/{model}/ready")
        s = _ready(f"{http}/v2/health/ready")
        seen.append((time.monotonic(), m, s))
        if any(not ok for _, ok, _ in seen) and m and s:
            break
        time.sleep(0.02)
    return seen


def test_a_killed_stub_under_load_is_healed_with_readiness_false_meanwhile(repository: Path) -> None:
    with launcher(repository, "--on-crash", "exit", "--exit-timeout", "5", *root_flags()) as run:
        _, triton = run.wait_ready()
        load = Load(run.grpc_url, model="add_one").start()
        try:
            load.wait_ok(5)
            stub = _stub_of("add_one", triton)
            os.kill(stub, signal.SIGKILL)
            killed = time.monotonic()
            seen = _watch_readiness(run.http_url, "add_one", killed + 60)
            healed_line, _ = run.wait_for(r"healed add_one in [0-9.]+ s", 60)
            back = time.monotonic()
            # Readiness went false (the model and the server's strict readiness), then true again.
            assert any(not m for _, m, _ in seen), seen[:5]
            assert any(not s for _, _, s in seen), "the server's readiness never dropped"
            assert seen[-1][1] and seen[-1][2], "readiness did not come back"
            assert "model process add_one_0_0" in run.output() and "died" in run.output()
            # Requests after recovery succeed, from the load and from a fresh client.
            load.wait_ok(20, after=back)
            import tritonclient.grpc as grpcclient

            with grpcclient.InferenceServerClient(run.grpc_url) as client:
                assert infer_add_one(client, [1.0, 2.0]).tolist() == [[2.0, 3.0]]
            assert not alive([stub])
            new_stub = _stub_of("add_one", triton)
            assert new_stub != stub
        finally:
            stuck = load.stop(35)
        assert not stuck
        # Nothing answered wrongly; failures only in the healing window, with a clear status.
        assert not [o for o in load.outcomes if o.status == "WRONG"]
        late = [o for o in load.outcomes if o.status != "OK" and o.start > back + 1.0]
        assert not late, late[:5]
        # Triton 2.51 never answers the requests that were inside the killed process (they fail at
        # their deadline) and keeps that model instance until shutdown, which then waits
        # --exit-timeout for it: the drain ends in time, with exit 0 or 5 (SECURITY.md).
        run.proc.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        assert run.wait(60) in (EXIT_OK, EXIT_DRAIN), run.output()[-4000:]
        assert time.monotonic() - signalled < 5 + 10 + 5  # --exit-timeout + the launcher's margin
        assert healed_line > 0


def test_sigterm_while_a_stub_is_dead_drains_and_exits_0(repository: Path) -> None:
    with launcher(repository, "--on-crash", "exit", *root_flags()) as run:
        _, triton = run.wait_ready()
        load = Load(run.grpc_url, model="slow").start()
        try:
            load.wait_ok(3)
            stub = _stub_of("add_one", triton)
            procs = set(group_members(os.getpgid(triton)))
            os.kill(stub, signal.SIGKILL)
            run.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            assert run.wait(60) == EXIT_OK, run.output()[-3000:]
            exited = time.monotonic()
        finally:
            stuck = load.stop(35)
        assert not stuck, "client calls hang after the drain"
        assert exited - signalled < 45, f"the drain took {exited - signalled:.0f} s"
        assert not wait_dead(procs)
        statuses = {o.status for o in load.outcomes}
        assert statuses <= {"OK", "UNAVAILABLE", "NOT_FOUND", "CANCELLED"}, statuses
        assert "Segmentation fault" not in run.output()
