"""What a process tree uses, read from /proc (standard library only): CPU seconds, RSS, PSS and the
/dev/shm bytes of a server's tree (the launcher, tritonserver, its Python stubs), by process role;
a background :class:`Sampler` that keeps a time series and the peaks; and the machine's busy time,
from which other jobs' load on a shared machine is derived (:class:`LoadMeter`).

Roles: ``tritonserver``; ``stub:<model>`` for a Python stub (the model directory its command line
names, so the instances of one model add up); any other process by its command name (``python3``,
``perf_analyzer``). A tree remembers the CPU seconds of the processes it saw that have exited since
(a restarted stub, a finished client), so its CPU time only grows.

    tree = ProcessTree(server_pid)
    before = tree.sample()
    ...  # load
    after = tree.sample()
    print(after.cpu_s - before.cpu_s, after.cpu_by_role(), after.pss / 2**20, after.shm)

    with Sampler({"server": server_pid}, interval_s=0.5) as s:
        ...
    s.peak("server").rss, s.series("server", "rss"), s.cores("server", t0, t1), s.foreign(t0, t1)
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ecomgen.launcher.process import SHM_REGION_RE, STUB_NAME, proc_cmdline
from ecomgen.launcher.stubwatch import describe_stub

__all__ = [
    "STUB_ROLE",
    "Load",
    "LoadMeter",
    "Peak",
    "ProcessSample",
    "ProcessTree",
    "Sampler",
    "Snapshot",
    "TreeSample",
    "descendants",
    "machine_busy_seconds",
    "process_cpu_seconds",
]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
SHM_DIR = Path("/dev/shm")
ADMISSION_PREFIX = "ecomgen-admission-"  # the ensembles' ticket tables (ecomgen.serving.admission)
STUB_ROLE = "stub:"


# --- one process ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    """The fields of /proc/<pid>/stat a sample needs."""

    pid: int
    comm: str
    state: str
    ppid: int
    cpu_s: float  # utime + stime
    start: int  # clock ticks after boot: with the pid, it names one process
    rss: int  # bytes


def _stat(pid: int) -> _Stat | None:
    try:
        data = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    close = data.rindex(")")
    f = data[close + 2 :].split()
    cpu = (int(f[11]) + int(f[12])) / CLOCK_TICKS
    return _Stat(
        pid, data[data.index("(") + 1 : close], f[0], int(f[1]), cpu, int(f[19]), int(f[21]) * PAGE_BYTES
    )


def _all_stats() -> dict[int, _Stat]:
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                out[st.pid] = st
    return out


def descendants(root: int, stats: Mapping[int, _Stat] | None = None) -> list[int]:
    """``root`` and every live descendant, parents first ([] when ``root`` is gone)."""
    table = _all_stats() if stats is None else stats
    if root not in table:
        return []
    children: dict[int, list[int]] = {}
    for pid, st in table.items():
        children.setdefault(st.ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop(0)
        out.append(pid)
        todo.extend(sorted(children.get(pid, [])))
    return out


def process_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one live process (None when it is gone)."""
    st = _stat(pid)
    return None if st is None else st.cpu_s


def pss_bytes(pid: int) -> int | None:
    """Proportional set size (shared pages divided among their users), or None if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def role(pid: int, comm: str) -> str:
    """``tritonserver``, ``stub:<model>`` or the command name."""
    args = proc_cmdline(pid)
    if args and Path(args[0]).name == STUB_NAME:
        stub = describe_stub(pid)
        return STUB_ROLE + (stub.model if stub is not None else "?")
    if args and Path(args[0]).name == "tritonserver":
        return "tritonserver"
    return comm


def shm_names(pids: Iterable[int]) -> set[str]:
    """The /dev/shm files of these processes: their stubs' regions (argv[2]) and the admission tables
    their tritonservers own (``ecomgen-admission-<pid>-<door>``)."""
    pids = set(pids)
    names = set()
    for pid in pids:
        args = proc_cmdline(pid)
        if len(args) > 2 and SHM_REGION_RE.fullmatch(args[2]):
            names.add(args[2])
    try:
        entries = os.listdir(SHM_DIR)
    except OSError:
        return names
    for name in entries:
        owner = name[len(ADMISSION_PREFIX) :].split("-", 1)[0]
        if name.startswith(ADMISSION_PREFIX) and owner.isdigit() and int(owner) in pids:
            names.add(name)
    return names


def shm_bytes(names: Iterable[str]) -> int:
    """Bytes allocated to these /dev/shm files (a region is sparse until written)."""
    total = 0
    for name in names:
        try:
            total += (SHM_DIR / name).stat().st_blocks * 512
        except OSError:
            continue
    return total


# --- a tree ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessSample:
    pid: int
    role: str
    cpu_s: float
    rss: int
    pss: int | None  # None: not read (memory off) or not readable (another user's process)


@dataclass(frozen=True)
class TreeSample:
    """One reading of a tree. ``cpu_s`` and ``roles_cpu`` include the processes that have exited since
    the tree first saw them; the memory figures are the live processes' sums."""

    time: float  # time.time()
    processes: tuple[ProcessSample, ...]
    cpu_s: float
    roles_cpu: dict[str, float]
    rss: int
    pss: int  # RSS where PSS could not be read
    shm: int  # bytes of the tree's /dev/shm regions and tables (0 when memory is off)

    def cpu_by_role(self, prefix: str = "") -> dict[str, float]:
        return {k: v for k, v in self.roles_cpu.items() if k.startswith(prefix)}

    def pids(self, prefix: str = "") -> list[int]:
        """Live pids whose role starts with ``prefix`` (``STUB_ROLE``: every Python stub)."""
        return [p.pid for p in self.processes if p.role.startswith(prefix)]


class ProcessTree:
    """A process and its descendants, sampled on demand; CPU of exited members is kept."""

    def __init__(self, root_pid: int, memory: bool = True) -> None:
        self.root = root_pid
        self.memory = memory
        self._seen: dict[tuple[int, int], tuple[str, float]] = {}  # (pid, start) -> (role, cpu_s)
        self._lock = threading.Lock()

    def pids(self) -> list[int]:
        return descendants(self.root)

    def sample(self, memory: bool | None = None) -> TreeSample:
        memory = self.memory if memory is None else memory
        stats = _all_stats()
        live = [stats[p] for p in descendants(self.root, stats) if stats[p].state != "Z"]
        processes = []
        with self._lock:
            for st in live:
                who = role(st.pid, st.comm)
                self._seen[(st.pid, st.start)] = (who, st.cpu_s)
                pss = pss_bytes(st.pid) if memory else None
                processes.append(ProcessSample(st.pid, who, st.cpu_s, st.rss, pss))
            roles: dict[str, float] = {}
            for who, cpu in self._seen.values():
                roles[who] = roles.get(who, 0.0) + cpu
        return TreeSample(
            time=time.time(),
            processes=tuple(processes),
            cpu_s=sum(roles.values()),
            roles_cpu=roles,
            rss=sum(p.rss for p in processes),
            pss=sum(p.rss if p.pss is None else p.pss for p in processes),
            shm=shm_bytes(shm_names(p.pid for p in processes)) if memory else 0,
        )

    def cpu_seconds(self) -> float:
        return self.sample(memory=False).cpu_s


# --- the machine -----------------------------------------------------------------------------------


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy, all CPUs (user, nice, system, irq, softirq: idle,
    I/O wait and the hypervisor's steal are not busy; guest time is already inside user)."""
    with open("/proc/stat") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / CLOCK_TICKS


@dataclass(frozen=True)
class Load:
    """The machine's busy CPU seconds and this process tree's own, at one moment."""

    time: float  # time.monotonic()
    busy_s: float
    own_s: float

    def foreign_cores(self, later: Load) -> float:
        """Average cores used by processes that are not ours (other jobs) between two readings."""
        dt = later.time - self.time
        if dt <= 0:
            return math.nan
        return max(0.0, (later.busy_s - self.busy_s) - (later.own_s - self.own_s)) / dt


class LoadMeter:
    """Reads :class:`Load`: this process and every descendant it has seen (exited ones included) are
    ours; the rest of the machine's busy time is other jobs'."""

    def __init__(self) -> None:
        self.own = ProcessTree(os.getpid(), memory=False)

    def read(self) -> Load:
        return Load(time.monotonic(), machine_busy_seconds(), self.own.cpu_seconds())


# --- in the background -------------------------------------------------------------------------------


@dataclass
class Peak:
    """Largest memory figures over a stretch of samples (bytes) and the most processes at once
    (``Peak()``: none yet)."""

    rss: int = field(default=0)
    pss: int = field(default=0)
    shm: int = field(default=0)
    processes: int = field(default=0)

    def merge(self, s: TreeSample | Peak) -> None:
        count = len(s.processes) if isinstance(s, TreeSample) else s.processes
        self.rss, self.pss = max(self.rss, s.rss), max(self.pss, s.pss)
        self.shm, self.processes = max(self.shm, s.shm), max(self.processes, count)


@dataclass(frozen=True)
class Snapshot:
    time: float  # time.time()
    trees: dict[str, TreeSample]
    load: Load | None


@dataclass
class Sampler:
    """Samples named process trees every ``interval_s`` in a thread: the time series (``snapshots``),
    average cores over any window, peaks, and other jobs' load (``machine``)."""

    roots: Mapping[str, int]
    interval_s: float = 0.5
    memory: bool = True
    machine: bool = True
    snapshots: list[Snapshot] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._trees = {name: ProcessTree(pid, self.memory) for name, pid in self.roots.items()}
        self._meter = LoadMeter() if self.machine else None
        self._peaks = {name: Peak() for name in self._trees}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = time.time()

    def sample(self) -> Snapshot:
        """One snapshot now (also recorded)."""
        trees = {name: tree.sample() for name, tree in self._trees.items()}
        snap = Snapshot(time.time(), trees, self._meter.read() if self._meter is not None else None)
        with self._lock:
            self.snapshots.append(snap)
            for name, s in trees.items():
                self._peaks[name].merge(s)
        return snap

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval_s)

    def start(self) -> Sampler:
        self._t0 = time.time()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- reading --------------------------------------------------------------------------------------

    def window(self, start: float, end: float) -> list[Snapshot]:
        """Snapshots taken between two wall-clock times (time.time())."""
        with self._lock:
            return [s for s in self.snapshots if start <= s.time <= end]

    def cores(self, name: str, start: float, end: float, role: str | None = None) -> float:
        """Average cores of tree ``name`` (or of one role in it) between two wall-clock times."""
        w = self.window(start, end)
        if len(w) < 2 or w[-1].time - w[0].time <= 0:
            return math.nan
        a, b = w[0].trees[name], w[-1].trees[name]
        used = b.cpu_s - a.cpu_s if role is None else b.roles_cpu.get(role, 0.0) - a.roles_cpu.get(role, 0.0)
        return used / (w[-1].time - w[0].time)

    def foreign(self, start: float, end: float) -> float:
        """Average cores used by processes that are not ours (other jobs on the machine)."""
        w = [s for s in self.window(start, end) if s.load is not None]
        if len(w) < 2:
            return math.nan
        assert w[0].load is not None and w[-1].load is not None
        return w[0].load.foreign_cores(w[-1].load)

    def peak(self, name: str) -> Peak:
        """The peak since the start (or the last :meth:`take_peak`)."""
        with self._lock:
            p = self._peaks[name]
            return Peak(p.rss, p.pss, p.shm, p.processes)

    def take_peak(self, name: str) -> Peak:
        """The peak since the last call (a fresh sample included), and start a new one."""
        self.sample()
        with self._lock:
            peak, self._peaks[name] = self._peaks[name], Peak()
        return peak

    def series(self, name: str, attr: str = "rss") -> list[tuple[float, float]]:
        """(seconds since the start, value) of one figure of tree ``name``: ``rss``, ``pss``, ``shm``
        in MiB, ``cpu_s`` in seconds."""
        scale = 1.0 if attr == "cpu_s" else 1.0 / 2**20
        with self._lock:
            return [(s.time - self._t0, getattr(s.trees[name], attr) * scale) for s in self.snapshots]

    def latest(self, name: str) -> TreeSample | None:
        with self._lock:
            return self.snapshots[-1].trees[name] if self.snapshots else None
