"""Heal a dead model process: every Python model instance runs in its own stub process, and
Triton 2.51 neither restarts a stub that died nor reports its model unready (requests fail
with "Stub process ... is not healthy" while /v2/health/ready answers 200).

The supervisor calls :meth:`StubWatch.check` while Triton runs. When a stub present at the
last healthy snapshot is gone (killed, out of memory, crashed), the watch unloads its model
and every model that depends on it (Triton's ``unload_dependents``: the ensembles that use
it), which makes them, and the server's strict readiness, report not ready; then it loads
them again (an ensemble load brings its steps back) and checks that every model is READY.
That takes about a second on a 2-core host. The repository API is behind the admin key,
which the launcher always holds (a random one when none is configured).

Repeated deaths of the same model within ``window_s`` count against ``max_heals``; past it the
watch gives up and the supervisor treats it as a crash (restart or exit, per ``--on-crash``).
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecomgen.launcher.process import ServerError, proc_cmdline
from ecomgen.launcher.security import admin_headers

log = logging.getLogger("ecomgen")

# triton_python_backend_stub <model.py> <shm region> <shm size> <growth> <parent pid> <backend dir>
# <ipc size> <instance name> <backend dir>: the positions of the fields the watch reads.
_MODEL_FILE, _INSTANCE = 1, 8


@dataclass(frozen=True)
class Stub:
    pid: int
    model: str
    instance: str


def describe_stub(pid: int) -> Stub | None:
    """The model and instance a stub process serves, from its command line."""
    args = proc_cmdline(pid)
    if len(args) <= _INSTANCE or not args[_MODEL_FILE].endswith("model.py"):
        return None
    return Stub(pid, Path(args[_MODEL_FILE]).parents[1].name, args[_INSTANCE])


class HealFailed(ServerError):
    """A dead model could not be brought back (or died too often): restart or exit."""


class StubWatch:
    """Compares the live stubs with the last healthy snapshot and heals what died."""

    def __init__(
        self, server: Any, max_heals: int = 5, window_s: float = 300.0, ready_timeout_s: float = 120
    ):
        self.server = server
        self.max_heals = max_heals
        self.window_s = window_s
        self.ready_timeout_s = ready_timeout_s
        self.expected: dict[str, Stub] = {}
        self.heals: collections.deque[float] = collections.deque()
        self.healed = 0

    def live(self) -> dict[str, Stub]:
        found = (describe_stub(p) for p in self.server.stub_pids())
        return {s.instance: s for s in found if s is not None}

    def snapshot(self) -> None:
        """Call when every model is ready: these stubs are the ones to keep alive."""
        self.expected = self.live()

    def check(self) -> list[str]:
        """Heal every model whose stub died while Triton still calls it READY; the models reloaded.

        A stub can also end because Triton unloaded its model (a drain on SIGTERM, an admin's
        unload): Triton then reports the model UNLOADING or UNAVAILABLE, and it is left alone.
        HealFailed when a model cannot be brought back.
        """
        live = self.live()
        dead = [s for name, s in self.expected.items() if name not in live or live[name].pid != s.pid]
        if not dead:
            self.expected = live  # models loaded since (an admin's load) are watched too
            return []
        if self.server.poll() is not None:
            return []  # tritonserver itself died, its stubs with it: the supervisor restarts it
        try:
            states = self.states()
        except Exception:  # not answering (stopping or dying): the supervisor's poll decides
            return []
        broken = [s for s in dead if states.get(s.model) == "READY"]
        self.expected = live
        if not broken:
            return []
        return self.heal_dead(broken)

    def states(self) -> dict[str, str]:
        """Every model's state from Triton's repository index (READY, UNLOADING, UNAVAILABLE...)."""
        client = self.server.grpc_client()
        try:
            index = client.get_model_repository_index(
                headers=admin_headers(self.server.admin_key), as_json=True
            )
            return {m["name"]: m.get("state", "") for m in index.get("models", [])}
        finally:
            client.close()

    def heal_dead(self, dead: list[Stub]) -> list[str]:
        models = sorted({s.model for s in dead})
        for s in dead:
            log.error("model process %s (pid %d) of %s died", s.instance, s.pid, s.model)
        now = time.monotonic()
        self.heals.append(now)
        while self.heals and now - self.heals[0] > self.window_s:
            self.heals.popleft()
        if len(self.heals) > self.max_heals:
            raise HealFailed(
                f"{len(self.heals)} model processes died within {self.window_s:.0f} s; giving up"
            )
        reloaded = self.heal(models)
        # New stubs, new shm regions: private to the server user like the first ones.
        self.server.protect_regions()
        self.healed += 1
        log.info("healed %s in %.1f s (reloaded %s)", ", ".join(models), time.monotonic() - now, reloaded)
        return reloaded

    def heal(self, models: Iterable[str]) -> list[str]:
        headers = admin_headers(self.server.admin_key)
        client = self.server.grpc_client()
        try:
            for m in models:
                # Unloading the dependents too makes them (and the server) report not ready until
                # the reload below; a dead stub's requests already fail, so nothing is lost.
                client.unload_model(m, headers=headers, unload_dependents=True)
            down = self._not_ready(client, headers)
            # An ensemble's load brings its steps back; load those first, then whatever is left.
            ensembles = set(self.server.ensembles())
            for m in sorted(down, key=lambda name: name not in ensembles):
                if m in self._not_ready(client, headers):
                    client.load_model(m, headers=headers)
            deadline = time.monotonic() + self.ready_timeout_s
            while time.monotonic() < deadline:
                left = self._not_ready(client, headers)
                if not left:
                    self.snapshot()
                    return sorted(down)
                time.sleep(0.1)
            raise HealFailed(f"models {sorted(left)} did not come back within {self.ready_timeout_s:.0f} s")
        except HealFailed:
            raise
        except Exception as e:  # the server refused or vanished: the supervisor restarts it
            raise HealFailed(f"could not reload {sorted(models)}: {e}") from e
        finally:
            client.close()

    @staticmethod
    def _not_ready(client: Any, headers: dict[str, str]) -> set[str]:
        index = client.get_model_repository_index(headers=headers, as_json=True).get("models", [])
        return {m["name"] for m in index if m.get("state") != "READY"}
