"""Helpers shared by the benchmark scripts: weights, repositories, servers, CPU accounting, reports.

Generic over the registry: a benchmark names a served model (``--model``), and its
networks, configs, payloads and checkpoints all come from that model's spec. Machine
facts come from :mod:`ecomgen.hostinfo` (the one place that parses lscpu).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import math
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from benchmarks.payloads import Payload
from ecomgen import hostinfo
from ecomgen.numerics import psnr_uint8
from ecomgen.registry import REGISTRY
from ecomgen.spec import ServedModel
from training.paths import CHECKPOINT_DIR, REPO_ROOT

if TYPE_CHECKING:
    from torch import nn

BENCH_DIR = REPO_ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
LOCUSTFILE = BENCH_DIR / "locustfile.py"
# Shared with `ecomgen build`: a runtime measured once per CPU model and ONNX file is reused.
CALIBRATION_DIR = REPO_ROOT / "build" / "calibration"
DEFAULT_MODEL = "product_gan"
WEIGHT_CHOICES = ("auto", "trained", "tiny")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def served_model(name: str) -> ServedModel:
    return REGISTRY[name]


# --- weights ---------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """Which network weights a benchmark used; ``label`` goes into every report.

    ``trained``: each model module's ``load_networks`` (the shipped checkpoints);
    ``tiny``: its ``tiny_networks(seed)``, random weights of a much smaller network, so
    throughput is not the served model's (smoke runs before any checkpoint exists).
    """

    kind: str  # "trained" or "tiny"
    seed: int = 0

    def modules(self, model: ServedModel) -> dict[str, nn.Module]:
        from export.onnx import load_modules, tiny_modules

        if self.kind == "trained":
            return load_modules(model, CHECKPOINT_DIR)
        return tiny_modules(model, self.seed)

    def label(self, models: Iterable[ServedModel]) -> str:
        models = [m for m in models if m.networks]
        if self.kind == "tiny":
            names = ", ".join(f"{m.module}.tiny_networks(seed={self.seed})" for m in models)
            return f"tiny random weights ({names}): not the served networks' size, so not representative"
        files = []
        for m in models:
            for name in m.checkpoints:
                path = CHECKPOINT_DIR / name
                if path.suffix == ".safetensors" and path.exists():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                    files.append(f"{path.relative_to(REPO_ROOT)} (sha256 {digest}…)")
        return "trained checkpoints: " + (", ".join(files) or "none listed in the specs")

    def cli_args(self) -> list[str]:
        """Arguments that make another process (the baseline server) load the same weights."""
        return ["--weights", self.kind, "--weights-seed", str(self.seed)]


def has_checkpoints(model: ServedModel) -> bool:
    return all((CHECKPOINT_DIR / c).exists() for c in model.checkpoints)


def resolve_weights(choice: str, models: Iterable[ServedModel], seed: int = 0) -> Weights:
    """``auto``: trained when every model's checkpoints exist, else tiny random weights."""
    if choice not in WEIGHT_CHOICES:
        raise ValueError(f"--weights must be one of {WEIGHT_CHOICES}, not {choice!r}")
    models = [m for m in models if m.networks]
    if choice == "auto":
        choice = "trained" if all(has_checkpoints(m) for m in models) else "tiny"
    if choice == "trained":
        missing = [c for m in models for c in m.checkpoints if not (CHECKPOINT_DIR / c).exists()]
        if missing:
            raise FileNotFoundError(
                f"missing checkpoints {missing} in {CHECKPOINT_DIR}: train or use --weights tiny"
            )
    return Weights(choice, seed)


# --- model repositories ----------------------------------------------------------


def export_networks(models: Iterable[ServedModel], weights: Weights, onnx_dir: Path) -> dict[str, str]:
    """Export (and parity-check) every network of ``models`` into ``onnx_dir``; network -> report."""
    from export.onnx import export_model

    reports = {}
    for model in models:
        if model.networks:
            for name, report in export_model(model, onnx_dir, weights.modules(model)).items():
                reports[name] = str(report)
    return reports


def with_runtime(model: ServedModel, runtime: str) -> ServedModel:
    """The model with its network steps pinned to ``runtime`` ("auto": as specified)."""
    return model if runtime == "auto" else dataclasses.replace(model, cpu_runtime=runtime)


def build_repository(
    root: Path, models: Sequence[ServedModel], onnx_dir: Path, calibrate: bool = True
) -> tuple[Path, dict[str, str]]:
    """The cpu target for ``models`` under ``root`` with their ONNX files; (repository, runtimes).

    Networks whose spec says ``auto`` get this host's calibrated runtime (cached under
    build/calibration, as ``ecomgen build`` does), so the benchmark serves what ``ecomgen
    serve`` would. ``runtimes``: network -> the runtime its step will run.
    """
    from ecomgen.serving.calibrate import calibrate as measure_choice
    from ecomgen.serving.calibrate import write_choice
    from ecomgen.serving.runners import FALLBACK_RUNTIME, RUNTIME_ENV
    from export.onnx import install_onnx, onnx_path
    from export.repository import write_repository

    write_repository(root, "cpu", models)
    install_onnx(root, onnx_dir, models)  # and the artifacts Python steps read
    runtimes: dict[str, str] = {}
    forced = os.environ.get(RUNTIME_ENV, "")
    for model in models:
        for net in model.networks:
            if model.cpu_runtime != "auto":
                runtimes[net.name] = model.cpu_runtime
            elif forced and forced != "auto":
                runtimes[net.name] = f"{forced} (${RUNTIME_ENV})"
            elif calibrate:
                choice = measure_choice(net, onnx_path(net, onnx_dir), CALIBRATION_DIR, model.cpu_threads)
                for placed in (root / "cpu").glob(f"*/1/{net.name}.onnx"):
                    write_choice(placed, choice)
                runtimes[net.name] = choice.runtime
            else:
                runtimes[net.name] = FALLBACK_RUNTIME
    return root / "cpu", runtimes


# --- servers ---------------------------------------------------------------------


def wait_grpc_ready(
    url: str, model: str, timeout_s: float = 120.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    with grpcclient.InferenceServerClient(url) as client:
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"server process exited with code {proc.returncode} before it was ready")
            with contextlib.suppress(InferenceServerException):
                if client.is_model_ready(model, client_timeout=2.0):
                    return
            time.sleep(0.25)
    raise TimeoutError(f"{url}: model {model} not ready after {timeout_s:.0f} s")


@contextlib.contextmanager
def triton_server(repository: Path, log: Path) -> Iterator[tuple[str, int]]:
    """Start the embedded tritonserver on free loopback ports; yields (grpc url, pid).

    Runs as the calling user (root on this VM; ``allow_root``): the server binds 127.0.0.1
    only and lives for one benchmark, and dropping to ``nobody`` would need the temporary
    repository and the venv readable by that account. ``ecomgen serve`` is what drops root.
    """
    from ecomgen.launcher import BUILD_DIR, ServerConfig, TritonServer, prepare_backend_dir
    from ecomgen.serving.triton_backend import install

    install(BUILD_DIR / "backends" / "ecomgen", prepare_backend_dir() / "python")
    config = ServerConfig(
        repository=repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        address="127.0.0.1",
        user=None,
        allow_root=True,
    )
    with TritonServer(config, log=log) as server:
        assert server.process is not None
        yield server.grpc_url, server.process.pid


@contextlib.contextmanager
def baseline_server(
    model: ServedModel, weights: Weights, threads: int, log: Path
) -> Iterator[tuple[str, int]]:
    """Start benchmarks/baseline_server.py in a child process; yields (grpc url, pid)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.baseline_server",
        "--model",
        model.name,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--threads",
        str(threads),
        *weights.cli_args(),
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        url = f"127.0.0.1:{port}"
        try:
            wait_grpc_ready(url, model.name, timeout_s=180, proc=proc)
            yield url, proc.pid
        finally:
            stop_process(proc)


def stop_process(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def infer_inputs(inputs: Mapping[str, np.ndarray], model: str) -> list[grpcclient.InferInput]:
    """tritonclient inputs with the contract's datatypes."""
    from benchmarks.payloads import contracts

    contract = contracts()[model]
    out = []
    for name, array in inputs.items():
        t = grpcclient.InferInput(name, list(array.shape), contract.input(name).dtype)
        t.set_data_from_numpy(array)
        out.append(t)
    return out


def fetch(url: str, p: Payload, timeout_s: float = 120.0) -> dict[str, np.ndarray]:
    """Send one payload; the outputs asked for, as numpy arrays."""
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(
            p.model,
            infer_inputs(p.inputs, p.model),
            outputs=[grpcclient.InferRequestedOutput(n) for n in p.outputs],
            client_timeout=timeout_s,
        )
    out = {}
    for name in p.outputs:
        value = result.as_numpy(name)
        if value is None:
            raise RuntimeError(f"{p.model}: no output {name!r} in the response")
        out[name] = value
    return out


def as_uint8_images(array: np.ndarray) -> np.ndarray | None:
    """A uint8 output as is; BYTES outputs decoded as images (PNG/JPEG); None for anything else."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.object_:
        import io

        from PIL import Image

        try:
            return np.stack(
                [np.asarray(Image.open(io.BytesIO(bytes(b))).convert("RGB")) for b in array.reshape(-1)]
            )
        except OSError:
            return None
    return None


def compare_outputs(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray]) -> tuple[int, float]:
    """Max uint8 difference and the lowest PSNR over the image outputs both answers hold."""
    worst_diff, worst_psnr = 0, math.inf
    for name in a.keys() & b.keys():
        x, y = as_uint8_images(a[name]), as_uint8_images(b[name])
        if x is None or y is None:
            continue
        worst_diff = max(worst_diff, int(np.abs(x.astype(np.int16) - y.astype(np.int16)).max()))
        worst_psnr = min(worst_psnr, psnr_uint8(x, y))
    return worst_diff, worst_psnr


# --- CPU accounting --------------------------------------------------------------


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live children (Triton's Python stubs)."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0.0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs; hypervisor steal excluded)."""
    t = psutil.cpu_times()
    idle = t.idle + getattr(t, "iowait", 0.0) + getattr(t, "steal", 0.0)
    return float(sum(t)) - idle - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)


class OwnCpu:
    """CPU seconds of this process and every descendant seen so far, exited ones included.

    Machine busy time minus this is the *foreign* load: other people's jobs on a shared
    machine, which the reports show next to every measurement.
    """

    def __init__(self) -> None:
        self._seen: dict[tuple[int, float], float] = {}

    def seconds(self) -> float:
        me = psutil.Process(os.getpid())
        for proc in [me, *me.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                t = proc.cpu_times()
                # Not children_*: reaped children were already counted while they ran.
                self._seen[(proc.pid, proc.create_time())] = t.user + t.system
        return sum(self._seen.values())


def wait_until_quiet(
    threshold_cores: float = 0.3, quiet_s: float = 3.0, timeout_s: float = 300.0, step_s: float = 0.5
) -> float:
    """Block until foreign load stays below ``threshold_cores`` for ``quiet_s``; returns the last level.

    Gives up after ``timeout_s`` (the measurement then goes ahead and the report shows the load).
    """
    own = OwnCpu()
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    t0, busy0, own0 = time.monotonic(), machine_busy_seconds(), own.seconds()
    level = math.nan
    while time.monotonic() < deadline:
        time.sleep(step_s)
        t1, busy1, own1 = time.monotonic(), machine_busy_seconds(), own.seconds()
        level = max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0)
        t0, busy0, own0 = t1, busy1, own1
        if level > threshold_cores:
            quiet_since = t1
        elif t1 - quiet_since >= quiet_s:
            return level
    return level


@dataclass
class CpuSampler:
    """Samples CPU seconds of named process trees in a thread, so any window can be read later.

    Also samples machine-wide busy time and this process tree's own CPU, for ``foreign``.
    """

    pids: dict[str, int]
    interval_s: float = 0.25
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _own: OwnCpu = field(default_factory=OwnCpu)

    def __enter__(self) -> CpuSampler:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            sample = {n: tree_cpu_seconds(p) for n, p in self.pids.items()}
            sample["_busy"], sample["_own"] = machine_busy_seconds(), self._own.seconds()
            self.samples.append((time.time(), sample))
            self._stop.wait(self.interval_s)

    def _window(self, start: float, end: float) -> list[tuple[float, dict[str, float]]]:
        return [(t, s) for t, s in self.samples if start <= t <= end]

    def cores(self, name: str, start: float, end: float) -> float:
        """Average cores used by ``name`` between two wall-clock times (nearest samples)."""
        w = self._window(start, end)
        if len(w) < 2 or w[-1][0] - w[0][0] <= 0:
            return math.nan
        return (w[-1][1][name] - w[0][1][name]) / (w[-1][0] - w[0][0])

    def foreign(self, start: float, end: float) -> float:
        """Average cores used by processes that are not ours (other jobs on the machine)."""
        w = self._window(start, end)
        if len(w) < 2 or w[-1][0] - w[0][0] <= 0:
            return math.nan
        (t0, a), (t1, b) = w[0], w[-1]
        return max(0.0, (b["_busy"] - a["_busy"]) - (b["_own"] - a["_own"])) / (t1 - t0)


# --- machine facts ---------------------------------------------------------------


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on (CPU facts from ecomgen.hostinfo)."""
    flags = hostinfo.cpu_flags()
    return {
        "model": hostinfo.cpu_model(),
        "description": hostinfo.machine_description(),
        "cpus": len(os.sched_getaffinity(0)),
        "isa": hostinfo.isa_summary(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "has_bf16": hostinfo.has_bf16(),
        "has_amx": "amx_tile" in flags or "amx_bf16" in flags,
        "gpu": gpu_present(),
        "python": platform.python_version(),
    }


def machine_slug(info: Mapping[str, Any] | None = None) -> str:
    """``intel-r-xeon-r-processor-2c``: CPU model and visible CPUs, for result file names."""
    info = info or machine_info()
    name = re.sub(r"[^a-z0-9]+", "-", str(info["model"]).lower()).strip("-")
    return f"{name}-{info['cpus']}c"


def machine_line(info: Mapping[str, Any]) -> str:
    return (
        f"{info['description']}; {info['cpus']} CPUs visible to the benchmark, {info['memory_gib']} GiB RAM; "
        f"bf16 hardware: {'yes' if info['has_bf16'] else 'no'}, AMX: {'yes' if info['has_amx'] else 'no'}"
    )


GPU_LINE = (
    "GPU: none. These scripts serve the cpu target (embedded Triton, CPU runtimes), so every number "
    "here is CPU-only; GPU numbers come from `python -m benchmarks.gpu` on a GPU host."
)


def bullet(line: str) -> str:
    """``"GPU: none. ..."`` -> ``"- **GPU**: none. ..."``."""
    head, _, rest = line.partition(":")
    return f"- **{head.strip('*')}**:{rest}"  # callers may already bold the head


def today() -> str:
    return dt.date.today().isoformat()


def result_stem(kind: str = "", info: Mapping[str, Any] | None = None) -> str:
    """``<date>-<machine>`` (+ ``-kind``), the file-name stem of every results file."""
    stem = f"{today()}-{machine_slug(info)}"
    return f"{stem}-{kind}" if kind else stem


def command_line() -> str:
    """The command that is running, as one would retype it from the repository root."""
    argv = list(sys.argv)
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None and spec.name else f"python {argv[0]}"
    return " ".join([prog, *map(_quote, argv[1:])])


def _quote(arg: str) -> str:
    return arg if re.fullmatch(r"[\w./:=,@+-]+", arg) else json.dumps(arg)


def newest(pattern: str, directory: Path = RESULTS_DIR) -> Path | None:
    found = sorted(directory.glob(pattern), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def write_json(path: Path, payload: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


def fmt(x: float | None, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"
