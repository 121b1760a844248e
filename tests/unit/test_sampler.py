"""ecomgen.launcher.sampler: /proc readings of this test process and a child, by role, in a thread."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

from ecomgen.launcher.sampler import (
    LoadMeter,
    ProcessTree,
    Sampler,
    descendants,
    machine_busy_seconds,
    process_cpu_seconds,
)

BUSY = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_the_test_process_and_a_child() -> None:
    tree = ProcessTree(os.getpid())
    before = tree.sample()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in tree.pids() and time.monotonic() < deadline:
            time.sleep(0.02)
        now = tree.sample()
        mine = next(p for p in now.processes if p.pid == os.getpid())
        assert {p.pid for p in now.processes} >= {os.getpid(), child.pid}
        assert descendants(os.getpid())[0] == os.getpid() and child.pid in descendants(os.getpid())
        assert mine.pss is not None and 0 < mine.pss <= mine.rss
        assert 0 < now.pss <= now.rss and now.rss > before.rss  # the child's pages count
        table = Path(f"/dev/shm/ecomgen-admission-{child.pid}-test_door")  # as a door step names it
        table.write_bytes(b"x" * 8192)
        try:
            assert tree.sample().shm - now.shm == 8192
        finally:
            table.unlink()
        assert now.cpu_by_role() and sum(now.roles_cpu.values()) == now.cpu_s
    finally:
        child.kill()
        child.wait()
    assert child.pid not in tree.pids()


def test_cpu_grows_with_work_and_exited_children_still_count() -> None:
    tree = ProcessTree(os.getpid(), memory=False)
    start = tree.cpu_seconds()
    burn(0.3)
    assert tree.cpu_seconds() - start >= 0.25
    child = subprocess.Popen([sys.executable, "-c", BUSY])
    seen = 0.0
    while child.poll() is None:
        seen = max(seen, tree.cpu_seconds())
        time.sleep(0.05)
    after = tree.cpu_seconds()
    assert after >= seen and after - start >= 0.55  # the child's last reading stays in the total
    own = process_cpu_seconds(os.getpid())
    assert own is not None and own > 0 and process_cpu_seconds(child.pid) is None


def test_the_sampler_records_peaks_series_and_cores() -> None:
    with Sampler({"me": os.getpid()}, interval_s=0.05) as s:
        t0 = time.time()
        # Busy for at least 0.4 s and until three snapshots exist (one snapshot of a big process
        # tree on a loaded machine can take longer than the interval).
        deadline = t0 + 30
        while time.time() < deadline and (time.time() - t0 < 0.4 or len(s.snapshots) < 3):
            burn(0.05)
        t1 = time.time()
    assert len(s.snapshots) >= 3
    assert 0.1 < s.cores("me", t0, t1) <= 1.5
    assert s.peak("me").rss > 0 and s.peak("me").processes >= 1
    series = s.series("me", "rss")
    assert len(series) == len(s.snapshots) and all(mib > 1 for _, mib in series)
    taken = s.take_peak("me")
    assert taken.pss > 0 and s.peak("me").rss == 0  # take_peak starts a new peak
    assert not math.isnan(s.foreign(t0, time.time()))


def test_machine_load_is_read() -> None:
    meter = LoadMeter()
    a = meter.read()
    burn(0.2)
    b = meter.read()
    assert b.busy_s >= a.busy_s and b.own_s - a.own_s >= 0.15
    assert a.foreign_cores(b) >= 0.0 and machine_busy_seconds() > 0
