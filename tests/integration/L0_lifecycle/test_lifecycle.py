"""The launcher owns tritonserver and every Python stub: crash, restart, drain, launcher death.

Issue 9 finding 7: kill -9 of tritonserver left a Python stub orphaned (2 of 2 runs), the launcher
exited 1 without restarting Triton, and a SIGTERM sent to tritonserver directly made the launcher
exit 1. Each test runs ``python -m ecomgen.launcher`` on the tiny repository of launcher_fixtures
under load, and checks the processes of *its own* server (by process group), never globally.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from ecomgen.launcher import EXIT_CRASH, EXIT_OK, EXIT_STARTUP, proc_cmdline
from tests.integration.launcher_fixtures import (
    Load,
    describe,
    group_of,
    is_stub,
    launcher,
    root_flags,
    wait_dead,
    write_repository,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_repository(tmp_path_factory.mktemp("lifecycle_repo"))


def _processes(triton_pid: int) -> set[int]:
    """tritonserver plus its two stubs (one per model); waits for the stubs to show up."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        group = group_of(triton_pid)
        if sum(map(is_stub, group)) >= 2:
            return group
        time.sleep(0.1)
    raise AssertionError(f"stubs of {triton_pid} not found: {describe(sorted(group_of(triton_pid)))}")


def _regions(group: set[int]) -> list[Path]:
    """The Python backend's shm regions of these stubs (16 MiB each, leaked by a killed Triton)."""
    return [Path("/dev/shm", proc_cmdline(p)[2]) for p in group if is_stub(p)]


def _hang_a_stub(group: set[int]) -> int:
    """SIGSTOP one stub: a stub stuck like the one of finding 7 never notices that its
    tritonserver died; only a kill of the whole group (SIGKILL works on stopped processes) ends it."""
    stub = min(p for p in group if is_stub(p))
    os.kill(stub, signal.SIGSTOP)
    return stub


def test_kill9_under_load_restarts_then_gives_up(repository: Path) -> None:
    """Restart mode: a killed Triton is replaced and serves again; the stubs of the killed one
    die with it; the second crash within the window exhausts --max-crashes 2 and exits 4."""
    flags = ["--on-crash", "restart", "--max-crashes", "2", "--crash-window", "120", *root_flags()]
    with launcher(repository, *flags) as run:
        _, pid1 = run.wait_ready()
        first = _processes(pid1)
        regions = _regions(first)
        assert len(regions) == 2 and all(r.exists() for r in regions)
        load = Load(run.grpc_url).start()
        try:
            load.wait_ok(5)
            _hang_a_stub(first)
            os.kill(pid1, signal.SIGKILL)
            killed_at = time.monotonic()
            i, _ = run.wait_for(r"tritonserver crashed \(killed by SIGKILL\)", 30)
            run.wait_for(r"restarting tritonserver in 1 s", 10, i)
            survivors = wait_dead(first)
            assert not survivors, f"orphans of the killed tritonserver: {describe(survivors)}"
            _, pid2 = run.wait_ready(60, after=i)
            assert pid2 != pid1
            second = _processes(pid2)
            load.wait_ok(5, after=killed_at)  # clients are served by the restarted server
            os.kill(pid2, signal.SIGKILL)
            assert run.wait(30) == EXIT_CRASH
            assert "giving up: 2 crashes" in run.output()
        finally:
            stuck = load.stop(35)
        assert not stuck, "client calls hang after the server died"
        survivors = wait_dead(first | second)
        assert not survivors, f"orphans: {describe(survivors)}"
        assert not [r for r in regions + _regions(second) if r.exists()], "leaked shm regions"


def test_kill9_in_exit_mode_exits_4_without_orphans(repository: Path) -> None:
    with launcher(repository, "--on-crash", "exit", *root_flags()) as run:
        _, pid = run.wait_ready()
        procs = _processes(pid)
        regions = _regions(procs)
        load = Load(run.grpc_url).start()
        try:
            load.wait_ok(3)
            _hang_a_stub(procs)
            os.kill(pid, signal.SIGKILL)
            assert run.wait(30) == EXIT_CRASH
        finally:
            stuck = load.stop(35)
        assert not stuck
        assert not wait_dead(procs), describe(sorted(procs))
        assert "ready (restart" not in run.output()
        assert not [r for r in regions if r.exists()], "leaked shm regions"


def test_sigterm_to_tritonserver_directly_exits_0(repository: Path) -> None:
    """Someone signals tritonserver itself: a clean drain, not a crash (no restart, exit 0).

    Meanwhile a second launcher on the same ports must not take the running server's answers
    for its own readiness: its tritonserver cannot bind, so it fails to start (exit 3)."""
    with launcher(repository, "--on-crash", "restart", *root_flags()) as run:
        _, pid = run.wait_ready()
        procs = _processes(pid)
        with launcher(repository, *root_flags(), ports=run.ports) as second:
            assert second.wait(60) == EXIT_STARTUP, second.output()[-2000:]
            assert "ecomgen: ready" not in second.output()
            assert "already in use" in second.output()
        os.kill(pid, signal.SIGTERM)
        assert run.wait(60) == EXIT_OK, run.output()[-2000:]
        assert "drained after a signal sent to it directly" in run.output()
        assert "restarting" not in run.output()
        assert not wait_dead(procs)


def test_sigterm_to_launcher_under_load_drains_and_exits_0(repository: Path) -> None:
    """In-flight requests complete; later ones fail fast; nothing hangs; nothing survives."""
    with launcher(repository, "--exit-timeout", "10", *root_flags()) as run:
        _, pid = run.wait_ready()
        procs = _processes(pid)
        load = Load(run.grpc_url, threads=6).start()
        try:
            load.wait_ok(10)
            signalled = time.monotonic()
            run.proc.send_signal(signal.SIGTERM)
            assert run.wait(40) == EXIT_OK, run.output()[-2000:]
            exited = time.monotonic()
        finally:
            stuck = load.stop(35)
        assert not stuck, "client calls hang after the drain"
        assert not wait_dead(procs), describe(sorted(procs))
        # Requests in flight at the SIGTERM were answered, not dropped.
        assert load.ok_between(signalled, exited) >= 1
        # Everything else failed fast. Triton 2.51 answers UNAVAILABLE ("Server is stopping"),
        # NOT_FOUND for a model it already unloaded during the drain (issue 9, finding 7; the
        # client's concern), and gRPC CANCELLED for calls that arrive while its gRPC service
        # shuts down. Never a wrong answer, never a call that waits for its deadline.
        statuses = {o.status for o in load.outcomes}
        assert statuses <= {"OK", "UNAVAILABLE", "NOT_FOUND", "CANCELLED"}, statuses
        slow = [o for o in load.outcomes if o.status != "OK" and o.end - o.start > 5.0]
        assert not slow, slow[:5]
        assert "tritonserver stopped (exit code 0)" in run.output()


def test_launcher_killed_takes_triton_and_stubs_with_it(repository: Path) -> None:
    """kill -9 of the launcher itself: PR_SET_PDEATHSIG kills tritonserver, the watchdog kills the
    rest of its group (the stubs have no death signal of their own)."""
    with launcher(repository, *root_flags()) as run:
        _, pid = run.wait_ready()
        procs = _processes(pid)
        regions = _regions(procs)
        load = Load(run.grpc_url).start()  # a busy stub is the one that survived in finding 7
        try:
            load.wait_ok(3)
            _hang_a_stub(procs)
            run.proc.send_signal(signal.SIGKILL)
            run.proc.wait(10)
            survivors = wait_dead(procs, timeout_s=10)
        finally:
            stuck = load.stop(35)
        assert not survivors, f"outlived the launcher: {describe(survivors)}"
        assert not stuck
        deadline = time.monotonic() + 5  # the watchdog removes them right after its kill
        while any(r.exists() for r in regions) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not [r for r in regions if r.exists()], "leaked shm regions"
