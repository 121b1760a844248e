"""Admission at an ensemble's door: refuse, before any expensive step, a request that cannot be
answered within its deadline, and bound the requests inside the ensemble.

Triton 2.51 has no ``max_inflight_requests`` for ensembles (2.63 adds it) and sheds overload
only where a step's queue is full, often after earlier steps did their work. So the first
Python step of an ensemble (the door) and its last one (the exit) share a small table of
tickets in /dev/shm, one file per door and server:

* the door takes a ticket per request: a free slot holding the request's deadline. With all
  ``size`` slots taken, or when the measured completion rate says the request would finish
  after its deadline, it refuses with :class:`Overloaded`, which the backend answers as
  Triton's own queue-full error (UNAVAILABLE "Exceeds maximum queue size ..."), the status
  that clients treat as "back off", not "retry elsewhere now";
* the exit gives the ticket back and updates the time between answers while busy (an EWMA of
  ``answered - max(previous answer, admitted)``): idle time does not count, so the estimate is
  the ensemble's service time per request under load, and one request's latency when idle.

A ticket whose request failed halfway is never given back; it frees itself at the request's
deadline, so the table cannot leak for longer than one deadline. Every process opens the same
file; ``flock`` serialises the few microseconds of bookkeeping.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import re
import time
from pathlib import Path

import numpy as np

from ecomgen.errors import Overloaded

SHM_DIR = Path(os.environ.get("ECOMGEN_SHM_DIR", "/dev/shm"))
EWMA = 0.2  # weight of the newest answer in the service-time estimate
_HEADER = 3  # [answers so far, last answer (ns), service time per answer (ns, EWMA)]


def table_path(door: str, server_pid: int | None = None) -> Path:
    """One file per door step and tritonserver (a stub's parent): two servers never share one."""
    pid = os.getppid() if server_pid is None else server_pid
    return SHM_DIR / f"ecomgen-admission-{pid}-{re.sub(r'[^A-Za-z0-9_.-]', '_', door)}"


class Admission:
    """The ticket table of one door; ``size`` is the bound on requests inside the ensemble."""

    def __init__(self, door: str, size: int, path: Path | None = None) -> None:
        if size < 1:
            raise ValueError(f"{door}: admission needs at least one slot, not {size}")
        self.door, self.size = door, size
        self.path = path or table_path(door)
        words = _HEADER + 2 * size
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < words * 8:
                os.ftruncate(fd, words * 8)
            self._map = mmap.mmap(fd, words * 8)
        finally:
            os.close(fd)
        self._lock = open(self.path, "rb")  # noqa: SIM115 (held for the process's life: flock target)
        table = np.frombuffer(self._map, dtype=np.int64)
        # Per slot: the request's deadline (0 free, -1 none) and when it was admitted.
        self._header = table[:_HEADER]
        self._slots = table[_HEADER : _HEADER + size]
        self._admitted = table[_HEADER + size : _HEADER + 2 * size]

    def _locked(self) -> _Flock:
        return _Flock(self._lock)

    def service_s(self) -> float | None:
        """Seconds between answers while busy (None until the first answer)."""
        return float(self._header[2]) / 1e9 if self._header[0] > 0 else None

    def admit(self, deadline_ns: int, now_ns: int | None = None) -> None:
        """Take a slot for a request due at ``deadline_ns`` (0 = none), or raise Overloaded."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._locked():
            live = (self._slots != 0) & ((self._slots < 0) | (self._slots > now))
            inside = int(live.sum())
            if inside >= self.size:
                raise Overloaded(
                    f"Exceeds maximum queue size: {self.door} has {inside} requests in flight "
                    f"(the bound is {self.size}); back off and retry later"
                )
            service = self.service_s()
            if deadline_ns > 0 and service is not None:
                wait = (inside + 1) * service
                left = (deadline_ns - now) / 1e9
                if wait > left:
                    raise Overloaded(
                        f"Exceeds maximum queue size: {self.door} would answer in about {wait:.2f} s "
                        f"({inside} requests ahead, {service * 1e3:.0f} ms each) but the deadline is "
                        f"{left:.2f} s away; back off, or send a longer timeout"
                    )
            free = int(np.flatnonzero(~live)[0])
            # A request without a deadline holds its slot until it is released (-1: never expires).
            self._slots[free] = deadline_ns if deadline_ns > 0 else -1
            self._admitted[free] = now

    def release(self, deadline_ns: int, now_ns: int | None = None) -> None:
        """Give back the slot of the request due at ``deadline_ns`` and count a completion."""
        now = time.monotonic_ns() if now_ns is None else now_ns
        key = deadline_ns if deadline_ns > 0 else -1
        with self._locked():
            match = np.flatnonzero(self._slots == key)
            if not match.size:
                return  # expired and reused, or never admitted here: nothing to learn from it
            slot = int(match[0])
            self._slots[slot] = 0
            took = now - max(int(self._header[1]), int(self._admitted[slot]))
            old = int(self._header[2])
            self._header[2] = took if self._header[0] == 0 else int(EWMA * took + (1 - EWMA) * old)
            self._header[1] = now
            self._header[0] += 1

    def inside(self, now_ns: int | None = None) -> int:
        now = time.monotonic_ns() if now_ns is None else now_ns
        with self._locked():
            return int(((self._slots != 0) & ((self._slots < 0) | (self._slots > now))).sum())

    def close(self) -> None:
        del self._header, self._slots, self._admitted  # numpy views pin the mapping
        self._map.close()
        self._lock.close()


class _Flock:
    def __init__(self, f: object) -> None:
        self.fd = f.fileno()  # type: ignore[attr-defined]

    def __enter__(self) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self.fd, fcntl.LOCK_UN)


def remove_tables(server_pid: int | None = None) -> list[Path]:
    """Delete the tables of one stopped tritonserver, or (None) of every server no longer running."""
    removed = []
    for path in SHM_DIR.glob("ecomgen-admission-*"):
        pid = path.name.split("-")[2]
        if not pid.isdigit():
            continue
        if int(pid) == server_pid or (server_pid is None and not Path(f"/proc/{pid}").exists()):
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed
