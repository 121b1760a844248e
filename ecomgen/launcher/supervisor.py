"""``serve``: run and supervise Triton until SIGINT/SIGTERM. A clean drain exits 0 whoever sent the
SIGTERM; a crash restarts Triton with exponential backoff or exits with a distinct code for an
orchestrator (``--on-crash``); a dead model stub is healed (see ``StubWatch``)."""

from __future__ import annotations

import argparse
import collections
import logging
import signal
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from ecomgen.launcher.config import (
    EXIT_CONFIG,
    EXIT_CRASH,
    EXIT_DRAIN,
    EXIT_OK,
    EXIT_STARTUP,
    ServerConfig,
    add_serve_arguments,
    config_from_args,
)
from ecomgen.launcher.process import ConfigError, ServerError, describe_returncode, listening_sockets
from ecomgen.launcher.security import (
    ADMIN_HEADER,
    ADMIN_KEY_ENV,
    GRPC_HEADER_PREFIX,
    RESTRICTABLE_APIS,
    STATS_HEADER,
    parse_ip,
)
from ecomgen.launcher.server import TritonServer
from ecomgen.launcher.stubwatch import HealFailed, StubWatch

log = logging.getLogger("ecomgen")

# --- supervision policy -----------------------------------------------------------------------------


@dataclass
class RestartPolicy:
    """Exponential backoff between restarts; give up after ``max_crashes`` within ``window_s``."""

    max_crashes: int = 5
    window_s: float = 300.0
    base_delay_s: float = 1.0
    max_delay_s: float = 30.0
    crashes: collections.deque[float] = field(default_factory=collections.deque)

    def record_crash(self, now: float) -> float | None:
        """The delay before the next start, or None to give up."""
        self.crashes.append(now)
        while self.crashes and now - self.crashes[0] > self.window_s:
            self.crashes.popleft()
        if len(self.crashes) >= self.max_crashes:
            return None
        return float(min(self.max_delay_s, self.base_delay_s * 2 ** (len(self.crashes) - 1)))


def exit_code_after_stop(returncode: int | None) -> int:
    """The launcher's exit code after a requested stop (SIGTERM/SIGINT to the launcher)."""
    return EXIT_OK if returncode in (0, None) else EXIT_DRAIN


def is_crash(returncode: int) -> bool:
    """Triton exited without a stop request from the launcher: 0 is a clean drain (someone sent
    SIGTERM/SIGINT to tritonserver itself); anything else is a crash."""
    return returncode != 0


def security_summary(server: TritonServer, sources: dict[str, str]) -> list[str]:
    """What the startup log says about keys, TLS and the user (never a key itself)."""
    c = server.config
    lines = []
    if c.admin_apis:
        if server.admin_key_generated:
            lines.append(
                f"admin APIs ({', '.join(c.admin_apis)}) are locked with a random key nobody knows "
                f"(no --admin-key-file or ${ADMIN_KEY_ENV}): they are off"
            )
        else:
            lines.append(
                f"admin APIs ({', '.join(c.admin_apis)}) need header {ADMIN_HEADER} "
                f"(gRPC: {GRPC_HEADER_PREFIX}{ADMIN_HEADER}); key from {sources.get('admin') or 'config'}"
            )
    else:
        lines.append("WARNING: no admin APIs restricted (--admin-apis is empty)")
    if c.stats_key is not None:
        lines.append(f"statistics need header {STATS_HEADER}; key from {sources.get('stats') or 'config'}")
    locked = {*c.admin_apis, *(["statistics"] if c.stats_key is not None else [])}
    open_apis = [a for a in RESTRICTABLE_APIS if a not in locked]
    lines.append(f"open to every caller: {', '.join(open_apis)}")
    if c.http and not c.http_inference:
        lines.append("HTTP serves health and metadata; inference is gRPC only (--http-inference to allow it)")
    if c.tls:
        mode = "mutual TLS (client certificates from --tls-ca)" if c.tls_client_auth else "TLS"
        lines.append(f"gRPC uses {mode}")
    elif parse_ip(c.address).is_loopback:
        lines.append("gRPC is plaintext (no --tls-cert)")
    else:
        lines.append(
            f"WARNING: gRPC is plaintext on {c.address}: shoppers' photos cross the network unencrypted "
            "unless a proxy or mesh adds TLS (--tls-cert/--tls-key)"
        )
    if not c.http:
        lines.append("HTTP is off")
    elif c.tls:
        lines.append(
            "WARNING: HTTP stays plaintext with TLS on gRPC; pass --no-http unless a proxy terminates TLS"
        )
    who = server.run_as
    if who.uid == 0:
        lines.append("WARNING: tritonserver runs as root")
    else:
        lines.append(f"tritonserver runs as {who.name} (uid {who.uid})")
    return lines


def banner(server: TritonServer, models: Sequence[str], restarts: int) -> str:
    c = server.config
    again = f" (restart {restarts})" if restarts else ""
    parts = [f"ecomgen: ready{again}. gRPC {server.grpc_url}"]
    if c.http:
        parts.append(f"HTTP {server.http_url}")
    if c.metrics:
        parts.append(f"metrics {server.metrics_url}")
    parts.append(f"models: {', '.join(models)}  (Ctrl-C to stop)")
    return "  ".join(parts)


def listening_line(server: TritonServer) -> str:
    """Where tritonserver really listens (read back from /proc, not from the flags)."""
    c = server.config
    names = {c.grpc_port: "gRPC", c.http_port: "HTTP", c.metrics_port: "metrics"}
    pid = server.process.pid if server.process else -1
    found = []
    for host, port in listening_sockets(pid):
        where = f"[{host}]" if ":" in host else host
        scope = (
            " (all IPv4 and IPv6 interfaces)"
            if host == "::"
            else " (all IPv4 interfaces)"
            if host == "0.0.0.0"
            else ""
        )
        found.append(f"{names.get(port, 'port')} {where}:{port}{scope}")
    who = server.run_as
    return (
        f"ecomgen: listening on {', '.join(found) or 'nothing?'} "
        f"(tritonserver pid {pid}, user {who.name}, uid {who.uid})"
    )


def _models(repository: Path) -> list[str]:
    return sorted(p.name for p in Path(repository).iterdir() if (p / "config.pbtxt").exists())


class Supervisor:
    """One ``ecomgen serve``: start Triton, watch it and its model processes, restart or exit."""

    def __init__(self, opt: argparse.Namespace, config: ServerConfig, sources: dict[str, str]):
        self.opt, self.config, self.sources = opt, config, sources
        self.server = TritonServer(config)
        self.policy = RestartPolicy(max_crashes=opt.max_crashes, window_s=opt.crash_window)
        self.watch = StubWatch(self.server, ready_timeout_s=opt.ready_timeout)
        self.stop = threading.Event()
        self.first_signal: list[float] = []
        self.models = _models(config.repository)
        self.restarts = 0

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        # A second signal at least a second later (an impatient Ctrl-C) kills at once; one sent
        # twice at the same moment (a wrapper forwarding it, a process-group kill) still drains.
        if not self.first_signal or time.monotonic() - self.first_signal[0] < 1.0:
            self.first_signal.append(time.monotonic())
            name = signal.Signals(signum).name
            log.info("received %s: draining tritonserver (up to %d s)", name, self.config.exit_timeout_s)
        else:
            log.warning("received %s again: killing tritonserver now", signal.Signals(signum).name)
            self.server.kill()
        self.stop.set()

    def run(self) -> int:
        """Start, supervise and restart Triton until a stop or a final failure; the exit code."""
        signal.signal(signal.SIGINT, self.on_signal)
        signal.signal(signal.SIGTERM, self.on_signal)
        while True:
            code = self.start()
            if code is not None:
                return code
            ready = self.wait_ready()
            if ready is None:
                return EXIT_STARTUP
            if ready:
                self.supervise()
            if self.stop.is_set():
                returncode = self.server.stop()
                log.info("tritonserver stopped (%s)", describe_returncode(returncode))
                return exit_code_after_stop(returncode)
            if ready:
                returncode = self.server.stop()
                if returncode is not None and not is_crash(returncode):
                    log.info(
                        "tritonserver stopped (exit code 0): it drained after a signal sent to it directly"
                    )
                    return EXIT_OK
                log.error("tritonserver crashed (%s)", describe_returncode(returncode))
            code = self.after_crash()
            if code is not None:
                return code

    def start(self) -> int | None:
        try:
            self.server.start()
        except ConfigError as e:
            log.error("%s", e)
            return EXIT_CONFIG
        except (ServerError, OSError) as e:
            log.error("cannot start tritonserver: %s", e)
            self.server.stop()
            return EXIT_STARTUP
        if self.restarts == 0:
            for line in security_summary(self.server, self.sources):
                log.info("%s", line)
        return None

    def wait_ready(self) -> bool | None:
        """True when ready, False when stopped first or a restart failed (a crash), None when the
        first start failed (exit 3)."""
        try:
            return self.server.wait_ready(self.opt.ready_timeout, cancel=self.stop)
        except ServerError as e:
            log.error("%s", e)
            self.server.stop()
            return None if self.restarts == 0 else False

    def supervise(self) -> None:
        """Serve until a stop, Triton's exit, or a model that cannot be healed."""
        print(banner(self.server, self.models, self.restarts), flush=True)
        print(listening_line(self.server), flush=True)
        self.watch.snapshot()
        while not self.stop.wait(0.2):
            if self.server.poll() is not None:
                return
            try:
                self.watch.check()
            except HealFailed as e:
                if self.server.poll() is not None or self.stop.is_set():
                    return  # Triton itself died (its stubs with it) or is stopping: not a heal
                log.error("%s: restarting tritonserver", e)
                self.server.kill()  # a crash: restart or exit below, per --on-crash
                return

    def after_crash(self) -> int | None:
        """Wait and restart (None), or the exit code when the policy says stop."""
        if self.opt.on_crash == "exit":
            return EXIT_CRASH
        delay = self.policy.record_crash(time.monotonic())
        if delay is None:
            log.error("giving up: %d crashes within %.0f s", len(self.policy.crashes), self.policy.window_s)
            return EXIT_CRASH
        self.restarts += 1
        log.warning("restarting tritonserver in %.0f s (restart %d)", delay, self.restarts)
        if self.stop.wait(delay):
            log.info("stop requested while tritonserver was down")
            return EXIT_OK
        return None


def serve(opt: argparse.Namespace, repository: Path) -> int:
    """Run and supervise Triton on ``repository`` until SIGINT/SIGTERM; the exit code (EXIT_*)."""
    try:
        config, sources = config_from_args(opt, repository)
        config.validate()
    except ConfigError as e:
        log.error("%s", e)
        return EXIT_CONFIG
    return Supervisor(opt, config, sources).run()


def main(argv: list[str] | None = None) -> int:
    """``python -m ecomgen.launcher --repository DIR``: the launcher without the build step."""
    p = argparse.ArgumentParser(prog="python -m ecomgen.launcher", description=__doc__.split("\n\n")[0])
    p.add_argument("--repository", type=Path, required=True, help="the model repository to serve")
    add_serve_arguments(p)
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    return serve(opt, opt.repository)
