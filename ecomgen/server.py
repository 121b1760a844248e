"""Launch the tritonserver that ships inside the nvidia-pytriton wheel.

The wheel carries Triton 2.51 (CPU) and its Python backend; the backend needs
the stub built for the running Python, and the stub needs this interpreter's
site-packages (numpy, onnxruntime) on its path. ``TritonServer`` arranges both,
starts the server with hardened flags, waits for readiness and stops it with
SIGTERM (SIGKILL only after a grace period).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import site
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO

REPO_ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = REPO_ROOT / "build" / "triton"
log = logging.getLogger("ecomgen")


class ServerError(RuntimeError):
    """The server failed to start, exited, or did not become ready in time."""


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as e:  # pragma: no cover - setup problem
        raise ServerError("nvidia-pytriton is not installed: run `make setup`") from e
    return Path(pytriton.__file__).resolve().parent


def tritonserver_binary() -> Path:
    path = pytriton_root() / "tritonserver" / "bin" / "tritonserver"
    if not path.exists():
        raise ServerError(f"tritonserver not found at {path}")
    return path


def library_dirs() -> list[Path]:
    """Shared libraries the bundled server and the Python stub link against."""
    libs = pytriton_root().parent / "nvidia_pytriton.libs"
    return [libs, Path(sysconfig.get_config_var("LIBDIR") or "/usr/lib")]


def prepare_backend_dir(build_dir: Path = BUILD_DIR) -> Path:
    """A backend directory whose Python backend has the stub for this interpreter."""
    src = pytriton_root() / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"no Python backend stub for Python {version} in {stub.parent.parent}")
    dest = build_dir / "backends" / "python"
    dest.mkdir(parents=True, exist_ok=True)
    for f in (src / "backends" / "python").iterdir():
        if f.is_file() and not (dest / f.name).exists():
            (dest / f.name).symlink_to(f)
    target = dest / "triton_python_backend_stub"
    if not target.exists() or target.stat().st_size != stub.stat().st_size:
        shutil.copy2(stub, target)
    return build_dir / "backends"


@dataclass
class ServerConfig:
    repository: Path
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    address: str = "0.0.0.0"
    log_verbose: int = 0
    exit_timeout_s: int = 30
    # Shared memory region of each Python-backend instance (64 images of 64x48x3 fit in 1 MB).
    python_shm_bytes: int = 16 * 1024 * 1024
    extra_args: tuple[str, ...] = field(default=())


class TritonServer:
    """A tritonserver child process; usable as a context manager."""

    def __init__(self, config: ServerConfig, log: IO[bytes] | Path | None = None):
        self.config = config
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def command(self) -> list[str]:
        c = self.config
        return [
            str(tritonserver_binary()),
            f"--model-repository={Path(c.repository).resolve()}",
            f"--backend-directory={prepare_backend_dir()}",
            "--model-control-mode=none",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--disable-auto-complete-config",
            f"--exit-timeout-secs={c.exit_timeout_s}",
            f"--grpc-address={c.address}",
            f"--grpc-port={c.grpc_port}",
            f"--http-address={c.address}",
            f"--http-port={c.http_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--metrics-address={c.address}",
            f"--metrics-port={c.metrics_port}",
            f"--backend-config=python,shm-default-byte-size={c.python_shm_bytes}",
            f"--log-verbose={c.log_verbose}",
            *c.extra_args,
        ]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            [*map(str, library_dirs()), *filter(None, [env.get("LD_LIBRARY_PATH")])]
        )
        # The stub embeds libpython and ignores PYTHONPATH; it derives sys.prefix from the first
        # `python3` on PATH, so putting this interpreter's bin/ first gives it this venv's packages.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        if sys.prefix != sys.base_prefix:
            env["VIRTUAL_ENV"] = sys.prefix
        paths = [*site.getsitepackages(), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(paths)
        return env

    def start(self) -> TritonServer:
        if self.process is not None:
            raise ServerError("server already started")
        out: IO[bytes] | None = None
        if isinstance(self.log, Path):
            self.log.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = out = self.log.open("wb")
        elif self.log is not None:
            out = self.log
        self.process = subprocess.Popen(
            self.command(), env=self.environment(), stdout=out, stderr=subprocess.STDOUT if out else None
        )
        return self

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.config.address in ("0.0.0.0", "") else self.config.address
        return f"http://{host}:{self.config.http_port}"

    @property
    def grpc_url(self) -> str:
        host = "127.0.0.1" if self.config.address in ("0.0.0.0", "") else self.config.address
        return f"{host}:{self.config.grpc_port}"

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.http_url}/v2/health/ready", timeout=2) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None:
                raise ServerError("server not started")
            code = self.process.poll()
            if code is not None:
                raise ServerError(
                    f"tritonserver exited with code {code} before it was ready{self._log_hint()}"
                )
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {timeout_s:.0f} s{self._log_hint()}")

    def _log_hint(self) -> str:
        if isinstance(self.log, Path) and self.log.exists():
            tail = self.log.read_text(errors="replace").splitlines()[-30:]
            return "; log tail:\n" + "\n".join(tail)
        return ""

    def stop(self, timeout_s: float | None = None) -> int | None:
        """SIGTERM, wait for Triton's own graceful exit, SIGKILL as a last resort."""
        proc, self.process = self.process, None
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s if timeout_s is not None else self.config.exit_timeout_s + 5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        return proc.returncode

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    """The launcher's flags (``ecomgen serve``)."""
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=8002)
    p.add_argument("--address", default="0.0.0.0", help="address to bind the three endpoints to")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--ready-timeout", type=float, default=180.0)


def serve(opt: argparse.Namespace, repository: Path) -> int:
    """Run Triton on ``repository`` until SIGINT/SIGTERM; the exit code of ``ecomgen serve``."""
    config = ServerConfig(
        repository=repository,
        grpc_port=opt.grpc_port,
        http_port=opt.http_port,
        metrics_port=opt.metrics_port,
        address=opt.address,
        log_verbose=opt.log_verbose,
    )
    server = TritonServer(config)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("received %s, stopping tritonserver", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    server.start()
    try:
        server.wait_ready(opt.ready_timeout)
        print(
            f"ecomgen: ready. gRPC {server.grpc_url}  HTTP {server.http_url}  "
            f"metrics http://{server.grpc_url.split(':')[0]}:{config.metrics_port}/metrics  "
            f"models: {', '.join(sorted(p.name for p in repository.iterdir() if p.is_dir()))}  "
            "(Ctrl-C to stop)",
            flush=True,
        )
        while not stop.wait(0.5):
            if server.process is None or server.process.poll() is not None:
                log.error("tritonserver exited unexpectedly")
                return 1
        return 0
    except ServerError as e:
        log.error("%s", e)
        return 1
    finally:
        code = server.stop()
        log.info("tritonserver stopped (exit code %s)", code)
