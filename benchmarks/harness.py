"""A benchmark's setup in one context: weights -> ONNX export -> a cpu repository -> the server(s) ->
a quiet machine -> machine facts.

    with Harness(["product_scene"], weights="auto", runtime=None) as h:
        h.url, h.repository, h.machine, h.weights_label, h.runtimes, h.server.triton_pid

Generic over the registry: a benchmark names served models (``--model``), and their networks,
configs, payloads and checkpoints come from their specs. Servers are the launcher
(``ecomgen.launcher.spawn.Launched``: ``python -m ecomgen.launcher``, what ``ecomgen serve --no-build``
runs) on free loopback ports, as the calling user; their process trees are read with
``ecomgen.launcher.sampler``. Machine facts come from :mod:`ecomgen.hostinfo` (the one place that
parses lscpu).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import report
from ecomgen import hostinfo
from ecomgen.launcher import Launched, LoadMeter, RunAs, free_port, stop_process, wait_ready
from ecomgen.registry import REGISTRY
from ecomgen.spec import ServedModel
from training.paths import CHECKPOINT_DIR, REPO_ROOT

if TYPE_CHECKING:
    from torch import nn

LOCUSTFILE = REPO_ROOT / "benchmarks" / "locustfile.py"
# Shared with `ecomgen build`: a runtime measured once per CPU model and ONNX file is reused.
CALIBRATION_DIR = REPO_ROOT / "build" / "calibration"
DEFAULT_MODEL = "product_gan"
WEIGHT_CHOICES = ("auto", "trained", "tiny")


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
            modules = [n for m in models for n in ((m.module,) if isinstance(m.module, str) else m.module)]
            names = ", ".join(f"{n}.tiny_networks(seed={self.seed})" for n in dict.fromkeys(modules))
            return f"tiny random weights ({names}): not the served networks' size, so not representative"
        files = []
        for m in models:
            for name in m.checkpoints:
                path = CHECKPOINT_DIR / name
                if path.suffix == ".safetensors" and path.exists():
                    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
                    files.append(f"{path.relative_to(REPO_ROOT)} (sha256 {digest}…)")
        return "trained checkpoints: " + (", ".join(dict.fromkeys(files)) or "none listed in the specs")

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

    reports: dict[str, str] = {}
    for model in models:
        if model.networks and not {n.name for n in model.networks} <= reports.keys():  # shared: once
            for name, report in export_model(model, onnx_dir, weights.modules(model)).items():
                reports[name] = str(report)
    return reports


def with_runtime(model: ServedModel, runtime: str | None) -> ServedModel:
    """The model with its network steps pinned to ``runtime`` ("auto" or None: as specified)."""
    return model if runtime in (None, "auto") else dataclasses.replace(model, cpu_runtime=runtime)


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


def python_step(model: ServedModel, repository: Path) -> Any:
    """The handler of a one-step model (its Python step) as the cpu target loads it, in this process."""
    from google.protobuf import json_format

    from ecomgen.serving.handlers import load_handler
    from ecomgen.serving.step import StepConfig
    from export.repository import model_configs

    config = json_format.MessageToDict(
        model_configs(model, "cpu")[0].config, preserving_proto_field_name=True
    )
    step_config = StepConfig.from_model_config(config, repository / model.name / "1")
    return load_handler(step_config.params["handler"])(step_config)


def add_arguments(
    p: argparse.ArgumentParser, *, runtime: bool = True, quiet: bool = True, smoke: str = ""
) -> None:
    """The flags the benchmark scripts share: --weights, --cpu-runtime, --wait-quiet, --out, and
    ``--smoke`` (with its help text) where a script has one; see :func:`parse_args`."""
    from ecomgen.serving.runners import RUNTIMES

    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="auto", help="auto: trained when present")
    if runtime:
        help_ = "auto: as `ecomgen serve` (this host's calibrated choice)"
        p.add_argument("--cpu-runtime", choices=["auto", *RUNTIMES], default="auto", help=help_)
    if quiet:
        help_ = "wait for other jobs' CPU to settle before each measurement"
        p.add_argument("--wait-quiet", action=argparse.BooleanOptionalAction, default=True, help=help_)
    p.add_argument("--out", type=Path, default=report.RESULTS_DIR, help="results directory")
    if smoke:
        p.add_argument("--smoke", action="store_true", help=smoke)


def parse_args(p: argparse.ArgumentParser, argv: list[str] | None, **smoke: Any) -> argparse.Namespace:
    """The options; with ``--smoke``: tiny weights, no waiting for a quiet machine, and ``smoke``."""
    opt = p.parse_args(argv)
    if getattr(opt, "smoke", False):
        for name, value in {"weights": "tiny", "wait_quiet": False, **smoke}.items():
            setattr(opt, name, value)
    return opt


# --- servers ---------------------------------------------------------------------


def launch(repository: Path, log: Path | None = None, *flags: str) -> Launched:
    """The launcher on ``repository`` (a cpu target), loopback, free ports, as the calling user.

    Not as ``nobody``: the server lives for one benchmark and binds 127.0.0.1 only, and the drop
    would need the temporary repository and the venv readable by that account. Use it as a context
    manager: it waits for the ready banner, and stops the server (a drain) on exit.
    """
    own = ["--user", RunAs.current().name, *(["--allow-root"] if os.geteuid() == 0 else [])]
    return Launched(repository, *own, *flags, address="127.0.0.1", cwd=REPO_ROOT, log=log)


@contextlib.contextmanager
def baseline_server(
    model: ServedModel, weights: Weights, threads: int, log: Path
) -> Iterator[tuple[str, int]]:
    """Start benchmarks/baseline_server.py in a child process; yields (grpc url, pid)."""
    port = free_port()
    cmd = [
        sys.executable, "-m", "benchmarks.baseline_server", "--model", model.name,
        "--host", "127.0.0.1", "--port", str(port), "--threads", str(threads), *weights.cli_args(),
    ]  # fmt: skip
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
        url = f"127.0.0.1:{port}"
        try:
            wait_ready(url, 180, model=model.name, proc=proc)
            yield url, proc.pid
        finally:
            stop_process(proc)


# --- the machine -----------------------------------------------------------------


def wait_until_quiet(
    threshold_cores: float = 0.3, quiet_s: float = 3.0, timeout_s: float = 300.0, step_s: float = 0.5
) -> float:
    """Block until other jobs' load stays below ``threshold_cores`` for ``quiet_s``; the last level.

    Gives up after ``timeout_s`` (the measurement then goes ahead and the report shows the load).
    """
    meter = LoadMeter()
    deadline = time.monotonic() + timeout_s
    last = meter.read()
    quiet_since, level = last.time, float("nan")
    while time.monotonic() < deadline:
        time.sleep(step_s)
        now = meter.read()
        level, last = last.foreign_cores(now), now
        if level > threshold_cores:
            quiet_since = now.time
        elif now.time - quiet_since >= quiet_s:
            return level
    return level


def gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None and Path("/dev/nvidia0").exists()


def machine_info() -> dict[str, Any]:
    """The machine a result was measured on (CPU facts from ecomgen.hostinfo)."""
    flags = hostinfo.cpu_flags()
    memory = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # MemTotal
    return {
        "model": hostinfo.cpu_model(),
        "description": hostinfo.machine_description(),
        "cpus": len(os.sched_getaffinity(0)),
        "isa": hostinfo.isa_summary(),
        "memory_gib": round(memory / 2**30, 1),
        "has_bf16": hostinfo.has_bf16(),
        "has_amx": "amx_tile" in flags or "amx_bf16" in flags,
        "gpu": gpu_present(),
        "python": platform.python_version(),
    }


# --- all of it in one context ------------------------------------------------------


class Harness:
    """Weights, export, a cpu repository of ``models``, ``servers`` launchers on it, a quiet machine.

    ``models``: names or ``ServedModel`` variants; ``runtime``: pin every network's CPU runtime
    (None or "auto": as ``ecomgen serve`` runs it); ``servers``: how many servers to start on the
    repository at once (0: none; start them later with :meth:`serve`); ``quiet``: wait for other jobs'
    load to settle after the start (and in :meth:`quiet`). Everything lives in one temporary folder.
    """

    def __init__(
        self,
        models: Sequence[ServedModel | str],
        weights: str = "auto",
        runtime: str | None = None,
        *,
        servers: int = 1,
        quiet: bool = False,
        calibrate: bool = True,
        seed: int = 0,
        prefix: str = "ecomgen-bench-",
    ) -> None:
        named = [REGISTRY[m] if isinstance(m, str) else m for m in models]
        self.models = [with_runtime(m, runtime) for m in named]
        self.weights_choice, self.seed, self.calibrate = weights, seed, calibrate
        self.server_count, self.wait_quiet, self.prefix = servers, quiet, prefix
        self.servers: list[Launched] = []
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> Harness:
        try:
            self.machine = machine_info()
            self.weights = resolve_weights(self.weights_choice, self.models, self.seed)
            self.tmp = Path(self._stack.enter_context(tempfile.TemporaryDirectory(prefix=self.prefix)))
            self.onnx_dir = self.tmp / "onnx"
            export_networks(self.models, self.weights, self.onnx_dir)
            self.repository, self.runtimes = build_repository(
                self.tmp / "repo", self.models, self.onnx_dir, self.calibrate
            )
            for i in range(self.server_count):
                self.servers.append(self._stack.enter_context(self.serve(log_name=f"tritonserver-{i}.log")))
            self.quiet()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:  # the servers' last words, before their folder goes
            for i, server in enumerate(self.servers):
                tail = "\n".join(server.lines[-30:])
                print(f"--- server {i} ({server.grpc_url}), last lines:\n{tail}", file=sys.stderr)
        self._stack.close()

    @property
    def weights_label(self) -> str:
        return self.weights.label(self.models)

    @property
    def server(self) -> Launched:
        return self.servers[0]

    @property
    def url(self) -> str:
        """The first server's gRPC address."""
        return self.server.grpc_url

    @property
    def urls(self) -> list[str]:
        return [s.grpc_url for s in self.servers]

    @property
    def pid(self) -> int:
        """The first server's tritonserver (the root of its tree: Triton and the Python stubs)."""
        return self.server.triton_pid

    def facts(self) -> dict[str, Any]:
        """What a result file starts with: the command, the date, the machine and the weights."""
        return {
            "command": report.command_line(),
            "date": report.today(),
            "machine": self.machine,
            "weights": self.weights_label,
        }

    def repository_for(self, models: Sequence[ServedModel], name: str) -> tuple[Path, dict[str, str]]:
        """Another cpu repository from the same ONNX files (a variant, a fused pipeline), in ``tmp/name``."""
        return build_repository(self.tmp / name, models, self.onnx_dir, self.calibrate)

    def serve(self, repository: Path | None = None, log_name: str = "tritonserver.log") -> Launched:
        """A server on ``repository`` (default: the harness's), as a context manager."""
        repository = self.repository if repository is None else repository
        return launch(repository, repository.parent / log_name)

    def quiet(self, **kwargs: float) -> float:
        """Wait for a quiet machine when the harness was asked to (``wait_until_quiet``); else 0."""
        return wait_until_quiet(**kwargs) if self.wait_quiet else 0.0
