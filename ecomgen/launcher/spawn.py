"""Start the launcher as a child process and wait until it serves; wait for a server already running.

:class:`Launched` runs ``python -m ecomgen.launcher --repository DIR`` (or, ``serve=True``, ``python -m
ecomgen serve --no-build --repository ROOT``) on given or free loopback ports, collects its output
line by line, waits for its ``ecomgen: ready`` banner and reads the tritonserver pid from the line
after it, and on exit stops it with SIGTERM (a drain), then SIGKILL after ``stop_timeout_s``. The
benchmarks, ``deploy/measure_resources.py`` and the launcher's integration tests start servers with it;
:func:`wait_ready` is for a server started elsewhere (``docker/smoke_test.py``: the container's).

    with Launched(repository, "--allow-root") as server:
        client = ProductClient(server.grpc_url)
        ProcessTree(server.triton_pid).sample()

The in-process :class:`ecomgen.launcher.server.TritonServer` stays the library-level API.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from ecomgen.launcher.sampler import descendants
from ecomgen.launcher.security import client_host

__all__ = ["LISTENING", "READY", "LaunchError", "Launched", "free_port", "stop_process", "wait_ready"]

READY = r"^ecomgen: ready"  # the banner: every model loaded, the ports are tritonserver's
LISTENING = r"tritonserver pid (\d+)"  # the line after it


class LaunchError(RuntimeError):
    """The server exited, did not print what was expected, or did not stop."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on now (bound and released)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _ready_once(url: str, model: str | None) -> bool:
    if url.startswith(("http://", "https://")):
        path = f"/v2/models/{model}/ready" if model else "/v2/health/ready"
        try:
            with urllib.request.urlopen(url.rstrip("/") + path, timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    try:
        with grpcclient.InferenceServerClient(url) as client:
            if model:
                return bool(client.is_model_ready(model, client_timeout=2.0))
            return bool(client.is_server_ready(client_timeout=2.0))
    except InferenceServerException:
        return False


def wait_ready(
    url: str,
    timeout_s: float = 180.0,
    *,
    model: str | None = None,
    proc: subprocess.Popen[bytes] | subprocess.Popen[str] | None = None,
    interval_s: float = 0.25,
) -> float:
    """Block until the server at ``url`` is ready; the seconds it took.

    ``http://host:port``: HTTP ``/v2/health/ready`` (``/v2/models/<model>/ready`` with ``model``);
    ``host:port``: gRPC ``is_server_ready`` (``is_model_ready``). ``proc``: the server's process, whose
    exit ends the wait (:class:`LaunchError`). :class:`TimeoutError` after ``timeout_s``.
    """
    start = time.monotonic()
    while True:
        if proc is not None and proc.poll() is not None:
            raise LaunchError(f"the server exited with code {proc.returncode} before {url} was ready")
        if _ready_once(url, model):
            return time.monotonic() - start
        if time.monotonic() - start > timeout_s:
            what = f"model {model}" if model else "the server"
            raise TimeoutError(f"{url}: {what} not ready after {timeout_s:.0f} s")
        time.sleep(interval_s)


def stop_process(
    proc: subprocess.Popen[bytes] | subprocess.Popen[str], timeout_s: float = 20.0, sig: int = signal.SIGTERM
) -> int | None:
    """``sig`` (default SIGTERM), then SIGKILL after ``timeout_s``; the exit code."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Launched:
    """The launcher in a child process; its output collected line by line (``lines``, ``output()``)."""

    def __init__(
        self,
        repository: Path,
        *flags: str,
        serve: bool = False,
        ports: Sequence[int] | None = None,
        address: str | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        log: Path | None = None,
        ready_timeout_s: float = 300.0,
        stop_timeout_s: float = 60.0,
    ) -> None:
        """``repository``: the models' directory (``serve``: the root holding ``cpu/``). ``flags``: more
        launcher flags. ``ports``: gRPC, HTTP, metrics (default: free ones). ``env``: the whole
        environment (default: this one's). ``log``: also write the output there."""
        self.ports = list(ports) if ports else [free_port(), free_port(), free_port()]
        entry = ["ecomgen", "serve", "--no-build"] if serve else ["ecomgen.launcher"]
        where = ["--address", address] if address else []
        self.cmd = [
            sys.executable, "-m", *entry, "--repository", str(repository), *where,
            "--grpc-port", str(self.ports[0]), "--http-port", str(self.ports[1]),
            "--metrics-port", str(self.ports[2]), *flags,
        ]  # fmt: skip
        host = client_host(address or "127.0.0.1")
        self.grpc_url = f"{host}:{self.ports[0]}"
        self.http_url = f"http://{host}:{self.ports[1]}"
        self.metrics_url = f"http://{host}:{self.ports[2]}/metrics"
        self.env, self.cwd, self.log = env, cwd, log
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        self.lines: list[str] = []
        self._triton_pid: int | None = None
        self.started_at = 0.0  # time.monotonic() at the start
        self.proc: subprocess.Popen[str] | None = None
        self._cond = threading.Condition()
        self._reader: threading.Thread | None = None

    # -- starting and reading ------------------------------------------------------------------------

    def start(self) -> Launched:
        """Start the process (without waiting for it to be ready)."""
        if self.proc is not None:
            raise LaunchError("already started")
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            self.cmd,
            cwd=self.cwd,
            env=None if self.env is None else dict(self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
        )
        self._reader = threading.Thread(target=self._read, name="launched-output", daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        sink: IO[str] | None = None
        if self.log is not None:
            self.log.parent.mkdir(parents=True, exist_ok=True)
            sink = self.log.open("a")
        try:
            for line in self.proc.stdout:
                if sink is not None:
                    sink.write(line)
                    sink.flush()
                with self._cond:
                    self.lines.append(line.rstrip("\n"))
                    self._cond.notify_all()
        finally:
            if sink is not None:
                sink.close()
            with self._cond:
                self._cond.notify_all()

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise LaunchError("not started")
        return self.proc.pid

    @property
    def triton_pid(self) -> int:
        """tritonserver's pid, from the line after the last ready banner seen: the root of Triton's
        tree (it and its Python stubs)."""
        if self._triton_pid is None:
            raise LaunchError("not ready yet: no tritonserver pid")
        return self._triton_pid

    def output(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def pids(self) -> list[int]:
        """The launcher and its live descendants (tritonserver, the stubs, the watchdog)."""
        return descendants(self.pid) if self.proc is not None else []

    def _finished(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is not None and not (self._reader is not None and self._reader.is_alive())

    def wait_for(self, pattern: str, timeout_s: float = 60.0, after: int = 0) -> tuple[int, re.Match[str]]:
        """The first output line at index >= ``after`` matching ``pattern``: (index, match)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                for i in range(after, len(self.lines)):
                    m = rx.search(self.lines[i])
                    if m:
                        return i, m
                left = deadline - time.monotonic()
                if left <= 0 or self.proc is None or self._finished():
                    rc = None if self.proc is None else self.proc.poll()
                    tail = "\n".join(self.lines[-40:])
                    raise LaunchError(f"{pattern!r} not printed (rc {rc}); output:\n{tail}")
                self._cond.wait(min(left, 0.5))

    def wait_ready(self, timeout_s: float | None = None, after: int = 0) -> tuple[int, int]:
        """(line index, tritonserver pid) of the next ready banner at or after line ``after``."""
        timeout = self.ready_timeout_s if timeout_s is None else timeout_s
        i, _ = self.wait_for(READY, timeout, after)
        j, m = self.wait_for(LISTENING, timeout, i)
        self._triton_pid = int(m.group(1))
        return j, self._triton_pid

    def wait(self, timeout_s: float = 60.0) -> int:
        """The exit code, once the process exits by itself within ``timeout_s``."""
        if self.proc is None:
            raise LaunchError("not started")
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired as e:
            raise LaunchError(f"still running after {timeout_s} s:\n{self.output()[-3000:]}") from e
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    # -- stopping -------------------------------------------------------------------------------------

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM (the launcher drains Triton), SIGKILL after ``timeout_s``; the exit code."""
        if self.proc is None:
            return None
        code = stop_process(self.proc, self.stop_timeout_s if timeout_s is None else timeout_s)
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def kill(self) -> None:
        """SIGKILL now (the launcher's watchdog then kills Triton's group)."""
        if self.proc is not None:
            stop_process(self.proc, 0.0, signal.SIGKILL)
            if self._reader is not None:
                self._reader.join(timeout=10)

    def __enter__(self) -> Launched:
        """Start, and wait for the ready banner (a launcher that is not ready in time is stopped)."""
        with contextlib.ExitStack() as not_ready:
            not_ready.callback(self.stop)
            self.start().wait_ready()
            not_ready.pop_all()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
