"""Helpers shared by the benchmark scripts: weights, repositories, servers, CPU accounting, machine facts."""

from __future__ import annotations

import contextlib
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
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from ecomgen_client.specs import PRODUCT_GAN, EnsembleSpec, ModelSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"
RESULTS_DIR = BENCH_DIR / "results"
LOCUSTFILE = BENCH_DIR / "locustfile.py"
VITON_FIXTURES = REPO_ROOT / "tests" / "fixtures" / "viton"
DEFAULT_CHECKPOINT = REPO_ROOT / PRODUCT_GAN.checkpoint
RANDOM_NGF = 48  # the architecture training/product_gan.py trains by default


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- weights ---------------------------------------------------------------------


@dataclass(frozen=True)
class Weights:
    """Which generator weights a benchmark used; ``label`` goes into every report."""

    checkpoint: Path | None  # None: deterministic random weights
    ngf: int = RANDOM_NGF
    seed: int = 0

    @property
    def label(self) -> str:
        if self.checkpoint is None:
            return (
                f"random weights: Generator(ngf={self.ngf}) after torch.manual_seed({self.seed}) "
                "(trained checkpoint absent; throughput does not depend on weight values)"
            )
        digest = hashlib.sha256(self.checkpoint.read_bytes()).hexdigest()[:12]
        path = self.checkpoint
        rel = path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path
        return f"trained checkpoint {rel} (sha256 {digest}…)"

    def cli_args(self) -> list[str]:
        """Arguments that make another process (the baseline server) load the same weights."""
        if self.checkpoint is None:
            return ["--random-ngf", str(self.ngf), "--random-seed", str(self.seed)]
        return ["--checkpoint", str(self.checkpoint)]


def resolve_weights(
    checkpoint: Path | None = None, *, random: bool = False, ngf: int = RANDOM_NGF
) -> Weights:
    """The trained checkpoint when it exists (or the one given), else random weights."""
    if random:
        return Weights(None, ngf)
    path = checkpoint or DEFAULT_CHECKPOINT
    if path.exists():
        return Weights(path.resolve())
    if checkpoint is not None:
        raise FileNotFoundError(f"checkpoint {checkpoint} does not exist")
    return Weights(None, ngf)


def load_generator(weights: Weights) -> Any:
    """An eval-mode fp32 ``training.product_gan.Generator`` for ``weights``."""
    import torch

    from training.product_gan import Generator, generator_from_checkpoint

    if weights.checkpoint is not None:
        return generator_from_checkpoint(weights.checkpoint)
    torch.manual_seed(weights.seed)
    return Generator(ngf=weights.ngf).eval()


# --- model repositories ----------------------------------------------------------


def export_onnx(generator: Any, path: Path, spec: ModelSpec = PRODUCT_GAN) -> Path:
    from export.onnx import export_network

    return export_network(generator, spec.network, path)


def build_repository(root: Path, onnx_file: Path, spec: ModelSpec = PRODUCT_GAN) -> Path:
    """Write the cpu target for ``spec`` under ``root`` with ``onnx_file``; returns the repository dir.

    ``export.repository.write_repository`` always renders the specs in ``SPECS``, so a tuned
    variant's config.pbtxt is re-rendered here from the same builder (``cpu_models``).
    """
    from export.onnx import onnx_path
    from export.repository import cpu_models, render_config, write_repository

    write_repository(root, "cpu")
    for other in (root / "cpu").iterdir():  # only the benchmarked model: the others need weights
        if other.name != spec.name:
            shutil.rmtree(other)
    (model,) = cpu_models(spec)
    (root / "cpu" / spec.name / "config.pbtxt").write_text(render_config(model.config))
    target = onnx_path(spec, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_file, target)
    return root / "cpu"


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
    """Start the embedded tritonserver on free ports; yields (grpc url, pid)."""
    from ecomgen.server import ServerConfig, TritonServer

    config = ServerConfig(
        repository=repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        address="127.0.0.1",
    )
    with TritonServer(config, log=log) as server:
        assert server.process is not None
        yield server.grpc_url, server.process.pid


@contextlib.contextmanager
def baseline_server(
    weights: Weights, threads: int, log: Path, spec: ModelSpec = PRODUCT_GAN
) -> Iterator[tuple[str, int]]:
    """Start benchmarks/baseline_server.py in a child process; yields (grpc url, pid)."""
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.baseline_server",
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
            wait_grpc_ready(url, spec.name, timeout_s=120, proc=proc)
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


def product_request(classes: Sequence[int], seeds: Sequence[int]) -> list[grpcclient.InferInput]:
    c = np.asarray(classes, dtype=np.int32).reshape(-1, 1)
    s = np.asarray(seeds, dtype=np.int64).reshape(-1, 1)
    inputs = [
        grpcclient.InferInput("class_id", list(c.shape), "INT32"),
        grpcclient.InferInput("seed", list(s.shape), "INT64"),
    ]
    inputs[0].set_data_from_numpy(c)
    inputs[1].set_data_from_numpy(s)
    return inputs


def fetch_images(
    url: str, classes: Sequence[int], seeds: Sequence[int], model: str = PRODUCT_GAN.name
) -> np.ndarray:
    with grpcclient.InferenceServerClient(url) as client:
        result = client.infer(model, product_request(classes, seeds), client_timeout=120.0)
    image = result.as_numpy("image")
    assert image is not None
    return image


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


def _lscpu() -> dict[str, str]:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    return {k.strip(): v.strip() for k, v in (line.split(":", 1) for line in out.splitlines() if ":" in line)}


def cpu_flags() -> set[str]:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def machine_info() -> dict[str, Any]:
    lscpu = _lscpu()
    flags = cpu_flags()
    model = lscpu.get("Model name", platform.processor() or "unknown cpu")
    cpus = len(os.sched_getaffinity(0))
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    vector = [f for f in wanted if f in flags]
    return {
        "model": model,
        "cpus": cpus,
        "threads_per_core": lscpu.get("Thread(s) per core", "?"),
        "cpu_family_model": f"family {lscpu.get('CPU family', '?')} model {lscpu.get('Model', '?')}",
        "hypervisor": lscpu.get("Hypervisor vendor", "none"),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "vector_flags": vector,
        "has_avx512": "avx512f" in flags,
        "has_bf16": bool({"avx512_bf16", "amx_bf16"} & flags),
        "has_amx": "amx_tile" in flags,
        "gpu": gpu_present(),
        "python": platform.python_version(),
    }


def machine_slug(info: dict[str, Any] | None = None) -> str:
    info = info or machine_info()
    name = re.sub(r"[^a-z0-9]+", "-", str(info["model"]).lower()).strip("-")
    return f"{name}-{info['cpus']}c"


def machine_line(info: dict[str, Any]) -> str:
    flags = ", ".join(info["vector_flags"]) or "none"
    return (
        f"{info['model']} ({info['cpu_family_model']}), {info['cpus']} CPUs visible, "
        f"{info['threads_per_core']} thread(s) per core, hypervisor {info['hypervisor']}, "
        f"{info['memory_gib']} GiB RAM; vector flags: {flags}; "
        f"AVX-512: {'yes' if info['has_avx512'] else 'no'}, AMX: {'yes' if info['has_amx'] else 'no'}, "
        f"bf16 hardware: {'yes' if info['has_bf16'] else 'no'}"
    )


GPU_LINE = (
    "GPU: none. This session had no GPU, so the `gpu` target (TensorRT ensemble) was not benchmarked; "
    "every number here is CPU-only."
)


def today() -> str:
    return dt.date.today().isoformat()


def result_stem(kind: str = "", info: dict[str, Any] | None = None) -> str:
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


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return path


# --- try-on inputs -----------------------------------------------------------------


def tryon_pairs(spec: EnsembleSpec) -> list[dict[str, np.ndarray]]:
    """The VITON fixture pairs (tests/fixtures/viton, unpaired protocol) as ``tryon`` inputs."""
    from PIL import Image

    pairs = []
    for line in (VITON_FIXTURES / "test_pairs.txt").read_text().splitlines():
        person, cloth = line.split()
        feeds = {}
        for t, path in zip(
            spec.inputs,
            (VITON_FIXTURES / "test" / "image" / person, VITON_FIXTURES / "test" / "cloth" / cloth),
            strict=True,
        ):
            with Image.open(path) as im:
                feeds[t.name] = np.asarray(im.convert("RGB"), dtype=np.uint8)[None]
        pairs.append(feeds)
    return pairs
