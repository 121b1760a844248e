"""GPU throughput of every served network in PyTorch: fp32, fp16, fp16 + CUDA graphs, torch.compile.

The GPU host this project can use has PyTorch and CUDA but no TensorRT and no Triton, so
this script measures what PyTorch alone gets out of it. It needs only torch and this
repository (numpy, and safetensors for the trained weights, come with any torch setup).

For every network of the registry (``REGISTRY.networks()``: product_gan's generator, the
try-on networks, and whatever is registered later), with the trained weights (each
model module's ``load_networks``) or ``--weights tiny`` (``tiny_networks``):

* images/s over a batch sweep (powers of two up to the network's max_batch_size), inputs
  from ``NetworkSpec.sample_inputs`` with variable dims at the TensorRT profile's opt shape,
  in four modes: ``fp32`` eager; ``fp16`` eager (``module.half()``, half inputs);
  ``fp16+graphs`` (one ``torch.cuda.CUDAGraph`` per batch size, replayed); ``fp16+compile``
  (``torch.compile`` of the fp16 module, inductor's default mode);
* fp16 parity against fp32 on the opt batch: PSNR of the uint8 outputs as a client sees them
  (``ecomgen.numerics.outputs_match``, the rule the CPU runtime calibration and the parity gate
  use), the largest level difference, NaN/Inf counts, for fp16 and for the compiled model.

Writes ``benchmarks/results/<date>-<gpu>-gpu.md`` (one Markdown table, plus the parity
table) and a JSON twin, naming the machine: GPU, driver, CUDA, cuDNN, torch.

**Time budget.** ``--budget-s`` (default 420) bounds the measurement: the cheap modes run
first for every network, ``torch.compile`` (tens of seconds per network and shape) last,
and a step that would not fit in what is left is skipped and listed as such, so a run
ends cleanly within 8 minutes on an H200.

``--dry-run``: on the CPU in seconds, tiny random weights, batches 1 and 2, short windows;
the CUDA-only parts (CUDA graphs) and torch.compile (minutes of CPU codegen) are skipped
and reported as such. Results go to ``build/benchmarks/`` unless ``--out`` says otherwise.

    python -m benchmarks.gpu                         # on the GPU host, < 8 min on an H200
    python -m benchmarks.gpu --dry-run               # here, on CPU, seconds
    python -m benchmarks.gpu --networks tryon_warp --modes fp32 fp16 --budget-s 60
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import importlib
import importlib.util
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import types
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from training.paths import CHECKPOINT_DIR, REPO_ROOT

if TYPE_CHECKING:
    from torch import nn

    from ecomgen.spec import NetworkSpec, ServedModel

RESULTS_DIR = REPO_ROOT / "benchmarks" / "results"
DRY_RUN_DIR = REPO_ROOT / "build" / "benchmarks"
MODES = ("fp32", "fp16", "fp16+graphs", "fp16+compile")
MODE_TITLES = {
    "fp32": "fp32 eager",
    "fp16": "fp16 eager",
    "fp16+graphs": "fp16 + CUDA graphs",
    "fp16+compile": "fp16 + torch.compile",
}
CUDA_ONLY = {"fp16+graphs"}
# Seconds kept for a compile nobody has timed yet on this run (inductor, one shape).
FIRST_COMPILE_ESTIMATE_S = 60.0


def _repo_imports() -> None:
    """The repository's packages, also on a host where the repo was only copied (nothing pip-installed).

    The GPU host has torch but not tritonclient, which ``ecomgen_client/__init__.py`` imports;
    the specs need only ``ecomgen_client.contracts`` (numpy), so without tritonclient the
    package is registered bare and its submodules load on their own.
    """
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if "ecomgen_client" in sys.modules:
        return
    spec = importlib.util.find_spec("ecomgen_client")
    if spec is None:
        sys.path.append(str(REPO_ROOT / "client"))
        spec = importlib.util.find_spec("ecomgen_client")
    if spec is not None and not _importable("tritonclient"):
        package = types.ModuleType("ecomgen_client")
        package.__path__ = list(spec.submodule_search_locations or [])
        sys.modules["ecomgen_client"] = package


def _importable(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


# --- machine ---------------------------------------------------------------------------


def nvidia_smi(query: str) -> str:
    if shutil.which("nvidia-smi") is None:
        return ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        ).stdout
        return out.strip().splitlines()[0] if out.strip() else ""
    return ""


def machine(device: torch.device) -> dict[str, Any]:
    from ecomgen import hostinfo

    info: dict[str, Any] = {
        "device": str(device),
        "cpu": hostinfo.machine_description(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            gpu=torch.cuda.get_device_name(device),
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            compute_capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            driver=nvidia_smi("driver_version") or "unknown (no nvidia-smi)",
            cuda=torch.version.cuda,
            cudnn=torch.backends.cudnn.version(),
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            tf32_conv=torch.backends.cudnn.allow_tf32,
            tf32_matmul=torch.backends.cuda.matmul.allow_tf32,
        )
        with contextlib.suppress(ImportError):
            import triton

            info["triton"] = triton.__version__
    else:
        info["gpu"] = "none (CPU dry run: no GPU number here)"
    return info


def machine_line(info: dict[str, Any]) -> str:
    if info["device"].startswith("cuda"):
        return (
            f"{info['gpu']} ({info['gpu_memory_gib']} GiB, compute capability {info['compute_capability']}, "
            f"{info['multiprocessors']} SMs), driver {info['driver']}, CUDA {info['cuda']}, "
            f"cuDNN {info['cudnn']} (benchmark mode; TF32 convolutions {info['tf32_conv']}, TF32 matmul "
            f"{info['tf32_matmul']}: torch's defaults), torch {info['torch']}, Python {info['python']}; "
            f"host CPU: {info['cpu']}"
        )
    return f"no GPU: CPU dry run on {info['cpu']}; torch {info['torch']}, Python {info['python']}"


def slug(info: dict[str, Any]) -> str:
    name = info["gpu"] if info["device"].startswith("cuda") else info["cpu"].split(" (")[0]
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# --- networks --------------------------------------------------------------------------


def load_network(model: ServedModel, net: NetworkSpec, weights: str, seed: int = 0) -> nn.Module:
    """The PyTorch module behind a network step: trained (``load_networks``) or tiny random weights."""
    for name in model.modules:
        module = importlib.import_module(name)
        found = module.load_networks(CHECKPOINT_DIR) if weights == "trained" else module.tiny_networks(seed)
        if net.name in found:
            return found[net.name].eval()
    raise KeyError(f"{model.name}: no module of {model.modules} provides {net.name}")


def has_checkpoints(model: ServedModel) -> bool:
    return all((CHECKPOINT_DIR / c).exists() for c in model.checkpoints)


def batch_sizes(net: NetworkSpec, wanted: list[int] | None) -> list[int]:
    top = max(1, net.max_batch_size)
    if wanted:
        return sorted({min(b, top) for b in wanted})
    return sorted({*(1 << i for i in range(top.bit_length()) if (1 << i) <= top), top})


def inputs(
    net: NetworkSpec, batch: int, device: torch.device, dtype: torch.dtype, seed: int = 0
) -> list[Any]:
    """The network's inputs in spec order; variable dims at the profile's opt shape."""
    feeds = net.sample_inputs(batch, seed=seed, size="opt")
    return [torch.from_numpy(feeds[t.name]).to(device=device, dtype=dtype) for t in net.inputs]


def outputs_of(result: Any) -> list[Any]:
    return [result] if isinstance(result, torch.Tensor) else list(result)


# --- timing ------------------------------------------------------------------------------


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def throughput(fn: Callable[[], object], batch: int, seconds: float, device: torch.device) -> float:
    """Items/s of ``fn`` (one batch per call) over at least ``seconds`` after one warm-up call.

    Calls run in chunks that double in size with one synchronisation per chunk, so the GPU
    queue stays full and the host never waits on every launch.
    """
    fn()
    sync(device)
    done, chunk, start = 0, 1, time.perf_counter()
    while True:
        for _ in range(chunk):
            fn()
        sync(device)
        done += chunk
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 3:
            return done * batch / elapsed
        chunk = min(chunk * 2, 256)


def graph_runner(module: nn.Module, args: list[Any], device: torch.device) -> Callable[[], object]:
    """Capture one forward pass in a CUDA graph (static inputs) and return its replay."""
    static = [a.clone() for a in args]
    stream = torch.cuda.Stream(device)
    stream.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(stream):
        for _ in range(3):  # warm up on a side stream, as torch.cuda.graphs asks
            module(*static)
    torch.cuda.current_stream(device).wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(*static)
    return graph.replay


# --- parity --------------------------------------------------------------------------------


@dataclass
class Parity:
    batch: int
    psnr_db: float  # lowest over the outputs
    max_uint8_diff: int
    nonfinite: int  # NaN/Inf values in the outputs (fp16 overflow)

    @property
    def passed(self) -> bool:
        from ecomgen.numerics import PARITY_MIN_PSNR_DB

        return self.nonfinite == 0 and self.psnr_db >= PARITY_MIN_PSNR_DB


def parity(net: NetworkSpec, outs: list[Any], ref: list[Any], batch: int) -> Parity:
    """``outs`` against ``ref`` (torch tensors, in ``net.outputs`` order) under the output-parity rule
    (``ecomgen.serving.calibrate.output_parity``: uint8 levels as a client sees them, PSNR)."""
    from ecomgen.serving.calibrate import output_parity

    def arrays(tensors: list[Any]) -> dict[str, np.ndarray]:
        return {t.name: o.detach().float().cpu().numpy() for t, o in zip(net.outputs, tensors, strict=True)}

    _, psnr, diff = output_parity(net, arrays(outs), arrays(ref))
    bad = sum(int((~torch.isfinite(o.float())).sum()) for o in outs)
    return Parity(batch, psnr, diff, bad)


# --- the sweep -------------------------------------------------------------------------------


@dataclass
class NetworkResult:
    network: str
    model: str
    weights: str
    batches: list[int]
    images_per_s: dict[str, dict[int, float]] = field(default_factory=dict)  # mode -> batch -> images/s
    parity: dict[str, Parity] = field(default_factory=dict)  # mode -> parity against fp32
    compile_s: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)  # mode (or "load") -> error


@dataclass
class Skip:
    network: str
    mode: str
    batches: list[int]
    reason: str


class Budget:
    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start = time.monotonic()

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)


@dataclass
class Context:
    device: torch.device
    seconds: float
    budget: Budget
    skipped: list[Skip] = field(default_factory=list)
    compile_times: list[float] = field(default_factory=list)


def parity_batch(net: NetworkSpec, batches: list[int]) -> int:
    """The profile's opt batch, within the sweep (a dry run's sweep stops early)."""
    return min(net.profile.opt_batch, max(batches))


def run_mode(
    ctx: Context,
    mode: str,
    net: NetworkSpec,
    fp32: nn.Module,
    fp16: nn.Module | None,
    result: NetworkResult,
    compile_backend: str,
) -> None:
    """One mode over the batch sweep, stopping cleanly when the budget runs out."""
    device = ctx.device
    dtype = torch.float32 if mode == "fp32" else torch.float16
    module: Any = fp32 if mode == "fp32" else fp16
    if module is None:
        ctx.skipped.append(Skip(net.name, mode, result.batches, "no fp16 module (fp16 conversion failed)"))
        return
    if mode == "fp16+compile":
        module = torch.compile(module, backend=compile_backend)
    speeds: dict[int, float] = {}
    for i, batch in enumerate(result.batches):
        need = ctx.seconds + 1.0
        if mode == "fp16+compile" and i < 2:  # batch 1 compiles static shapes, batch 2 the dynamic graph
            need += max(ctx.compile_times, default=FIRST_COMPILE_ESTIMATE_S)
        if ctx.budget.left() < need:
            ctx.skipped.append(
                Skip(
                    net.name,
                    mode,
                    result.batches[i:],
                    f"time budget: {max(0.0, ctx.budget.left()):.0f} s left, ~{need:.0f} s needed",
                )
            )
            break
        try:
            args = inputs(net, batch, device, dtype)
            with torch.no_grad():
                if mode == "fp16+compile":
                    t0 = time.perf_counter()
                    module(*args)
                    sync(device)
                    first = time.perf_counter() - t0
                    if i < 2:
                        ctx.compile_times.append(first)
                        result.compile_s += first
                graphs = mode == "fp16+graphs"
                fn = graph_runner(module, args, device) if graphs else call_with(module, args)
                speeds[batch] = throughput(fn, batch, ctx.seconds, device)
                del fn
        except Exception as e:  # an op without a kernel for this dtype/device, OOM, a compile error
            result.errors[mode] = (
                f"batch {batch}: {type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            )
            break
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
    result.images_per_s[mode] = speeds
    if mode in ("fp16", "fp16+compile") and speeds:  # CUDA graphs replay the fp16 numerics exactly
        # The opt batch, or the largest one measured: a new shape would cost torch.compile a recompile.
        batch = parity_batch(net, result.batches)
        batch = batch if batch in speeds else max(speeds)
        try:
            with torch.no_grad():
                reference = outputs_of(fp32(*inputs(net, batch, device, torch.float32, seed=123)))
                outs = outputs_of(module(*inputs(net, batch, device, dtype, seed=123)))
            result.parity[mode] = parity(net, outs, reference, batch)
        except Exception as e:
            result.errors[f"{mode} parity"] = f"{type(e).__name__}: {str(e)[:300]}"


def call_with(module: Any, args: list[Any]) -> Callable[[], object]:
    def call() -> object:
        return module(*args)

    return call


def sweep(
    networks: list[tuple[ServedModel, NetworkSpec]], opt: argparse.Namespace, ctx: Context
) -> tuple[list[NetworkResult], list[Skip]]:
    """Cheap modes for every network first, torch.compile for every network last."""
    results: dict[str, NetworkResult] = {}
    modules: dict[str, tuple[Any, Any]] = {}
    modes = [m for m in MODES if m in opt.modes]
    cheap = [m for m in modes if m != "fp16+compile"]
    for model, net in networks:
        weights = opt.weights
        if weights == "auto":
            weights = "trained" if has_checkpoints(model) else "tiny"
        result = NetworkResult(net.name, model.name, weights, batch_sizes(net, opt.batches))
        results[net.name] = result
        try:
            fp32 = load_network(model, net, weights, opt.seed).to(ctx.device)
        except Exception as e:
            result.errors["load"] = f"{type(e).__name__}: {e}"
            ctx.skipped.append(Skip(net.name, "all", result.batches, f"could not load the network: {e}"))
            continue
        fp16 = None
        with contextlib.suppress(Exception):
            fp16 = copy.deepcopy(fp32).half()
        batch = parity_batch(net, result.batches)
        try:
            with torch.no_grad():
                outputs_of(fp32(*inputs(net, batch, ctx.device, torch.float32, seed=123)))  # runs at all?
        except Exception as e:
            result.errors["fp32"] = f"{type(e).__name__}: {e}"
            ctx.skipped.append(Skip(net.name, "all", result.batches, f"fp32 forward failed: {e}"))
            continue
        modules[net.name] = (fp32, fp16)
        for mode in cheap:
            reason = skip_reason(mode, ctx.device, opt)
            if reason:
                ctx.skipped.append(Skip(net.name, mode, result.batches, reason))
                continue
            run_mode(ctx, mode, net, fp32, fp16, result, opt.compile_backend)
    if "fp16+compile" in modes:
        for _model, net in networks:
            if net.name not in modules:
                continue
            reason = skip_reason("fp16+compile", ctx.device, opt)
            if reason:
                ctx.skipped.append(Skip(net.name, "fp16+compile", results[net.name].batches, reason))
                continue
            fp32, fp16 = modules[net.name]
            torch._dynamo.reset()  # each network compiles from a clean cache
            run_mode(ctx, "fp16+compile", net, fp32, fp16, results[net.name], opt.compile_backend)
    return list(results.values()), ctx.skipped


def skip_reason(mode: str, device: torch.device, opt: argparse.Namespace) -> str:
    if mode in CUDA_ONLY and device.type != "cuda":
        return "CUDA only (no GPU here)"
    if mode == "fp16+compile" and opt.dry_run and not opt.compile_in_dry_run:
        return "--dry-run: torch.compile takes minutes of CPU code generation (--compile-in-dry-run to try)"
    return ""


# --- report ------------------------------------------------------------------------------------


def _ips(x: float | None) -> str:
    return "–" if x is None else f"{x:,.0f}" if x >= 100 else f"{x:,.1f}"


def render(payload: dict[str, Any], results: list[NetworkResult], skipped: list[Skip]) -> str:
    from ecomgen.numerics import PARITY_MIN_PSNR_DB

    info = payload["machine"]
    modes = payload["modes"]
    title = info["gpu"] if info["device"].startswith("cuda") else "CPU dry run, no GPU"
    lines = [
        f"# Served networks on the GPU in PyTorch ({title})",
        "",
        f"- **Date**: {payload['date']}",
        f"- **Command**: `{payload['command']}` (took {payload['wall_s'] / 60:.1f} min; time budget "
        f"{payload['budget_s']:.0f} s for the measurements)",
        f"- **Machine**: {machine_line(info)}",
        "- **What**: every network of the registry (`REGISTRY.networks()`), inputs from the spec at the "
        "TensorRT profile's opt shape; images/s per batch size = batch x calls / wall time, "
        f"{payload['seconds']:g} s per cell after a warm-up call. fp16 = `module.half()` with half inputs; "
        "CUDA graphs: one captured forward per batch size, replayed; torch.compile: backend "
        f"{payload['compile_backend']}, default mode, on the fp16 module (compile time not in the images/s).",
        "- **Not measured here**: TensorRT and Triton (not installable on this GPU host); the gpu "
        "target serves TensorRT FP16 plans, which this table does not cover.",
    ]
    if not info["device"].startswith("cuda"):
        lines.append("- **Dry run**: nothing here ran on a GPU; the numbers only show that the script works.")
    lines += [
        "",
        "## Images/s",
        "",
        "| network | weights | batch | " + " | ".join(MODE_TITLES[m] for m in modes) + " |",
        "|---|---|---:|" + "---:|" * len(modes),
    ]
    for r in results:
        for b in r.batches:
            cells = [_ips(r.images_per_s.get(m, {}).get(b)) for m in modes]
            lines.append(f"| {r.network} | {r.weights} | {b} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "## Best batch per mode, and fp16 parity against fp32",
        "",
        f"Parity: PSNR of the uint8 outputs (worst output) against fp32 eager on the same inputs; the gate "
        f"is {PARITY_MIN_PSNR_DB:.0f} dB with no NaN/Inf.",
        "",
        "| network | "
        + " | ".join(f"{MODE_TITLES[m]} best (batch)" for m in modes)
        + " | best speed-up vs fp32 | fp16 PSNR | fp16 NaN/Inf | compiled PSNR | compile s |",
        "|---|" + "---:|" * (len(modes) + 5),
    ]
    for r in results:
        cells, best = [], {}
        for m in modes:
            speeds = r.images_per_s.get(m, {})
            if speeds:
                b = max(speeds, key=lambda k: speeds[k])
                best[m] = speeds[b]
                cells.append(f"{_ips(speeds[b])} ({b})")
            else:
                cells.append("–")
        base = best.get("fp32")
        top = max((v for k, v in best.items() if k != "fp32"), default=None)
        speedup = f"{top / base:.1f}x" if base and top else "–"
        p16, pc = r.parity.get("fp16"), r.parity.get("fp16+compile")
        lines.append(
            f"| {r.network} | "
            + " | ".join(cells)
            + f" | {speedup} | {_db_cell(p16)} | {p16.nonfinite if p16 else '–'} | {_db_cell(pc)} | "
            + (f"{r.compile_s:.0f}" if r.compile_s else "–")
            + " |"
        )
    errors = [(r.network, m, e) for r in results for m, e in r.errors.items()]
    if errors:
        lines += ["", "## Errors", ""] + [f"- {n} {m}: `{e}`" for n, m, e in errors]
    lines += ["", "## Skipped", ""]
    if skipped:
        for s in skipped:
            lines.append(f"- {s.network} {s.mode} (batches {', '.join(map(str, s.batches))}): {s.reason}")
    else:
        lines.append("Nothing: every network, mode and batch size ran.")
    return "\n".join(lines) + "\n"


def _db_cell(p: Parity | None) -> str:
    if p is None:
        return "–"
    value = "∞" if math.isinf(p.psnr_db) else f"{p.psnr_db:.1f} dB"
    return f"{value}{'' if p.passed else ' (fails)'} @{p.batch}"


# --- main ------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny weights, tiny sweep: seconds")
    p.add_argument("--networks", nargs="+", default=None, help="default: every network of the registry")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default: powers of two to max batch")
    p.add_argument("--seconds", type=float, default=None, help="per cell (default 0.25; dry run 0.01)")
    p.add_argument("--budget-s", type=float, default=420.0, help="stop the sweep cleanly after this")
    p.add_argument(
        "--weights", choices=("auto", "trained", "tiny"), default=None, help="default: auto (dry: tiny)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of --weights tiny")
    p.add_argument("--device", default=None, help="default: cuda when available (dry run: cpu)")
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend")
    p.add_argument("--compile-in-dry-run", action="store_true", help="do not skip torch.compile in --dry-run")
    p.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results (dry run: build/benchmarks)"
    )
    opt = p.parse_args(argv)
    if opt.dry_run:
        opt.device = opt.device or "cpu"
        opt.weights = opt.weights or "tiny"
        opt.batches = opt.batches or [1, 2]
        opt.seconds = 0.01 if opt.seconds is None else opt.seconds
        opt.out = opt.out or DRY_RUN_DIR
    opt.weights = opt.weights or "auto"
    opt.seconds = 0.25 if opt.seconds is None else opt.seconds
    opt.out = opt.out or RESULTS_DIR
    return opt


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    opt = parse(argv)
    _repo_imports()
    from ecomgen.registry import REGISTRY

    device = torch.device(opt.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type != "cuda" and not opt.dry_run:
        print(
            "benchmarks.gpu: no CUDA device here; use --dry-run (or --device cpu to force)", file=sys.stderr
        )
        if opt.device is None:
            return 2
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # per-shape kernel choice, as a tuned deployment would
    else:
        torch.set_num_threads(1)  # a dry run on a shared CPU: one thread is fastest and steadiest
    all_networks = REGISTRY.networks()
    names = opt.networks or list(all_networks)
    unknown = sorted(set(names) - set(all_networks))
    if unknown:
        print(
            f"benchmarks.gpu: unknown networks {unknown}; registered: {sorted(all_networks)}", file=sys.stderr
        )
        return 2
    networks = [all_networks[n] for n in names]
    ctx = Context(device, opt.seconds, Budget(opt.budget_s))
    info = machine(device)
    results, skipped = sweep(networks, opt, ctx)
    payload = {
        "command": command_line(argv),
        "date": dt.date.today().isoformat(),
        "machine": info,
        "modes": [m for m in MODES if m in opt.modes],
        "seconds": opt.seconds,
        "budget_s": opt.budget_s,
        "compile_backend": opt.compile_backend,
        "dry_run": opt.dry_run,
        "networks": [
            {**asdict(r), "parity": {m: {**asdict(p), "passed": p.passed} for m, p in r.parity.items()}}
            for r in results
        ],
        "skipped": [asdict(s) for s in skipped],
        "wall_s": time.monotonic() - started,
    }
    kind = "gpu-dry-run" if opt.dry_run else "gpu"
    stem = opt.out / f"{payload['date']}-{slug(info)}-{kind}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    text = render(payload, results, skipped)
    stem.with_suffix(".md").write_text(text)
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(text)
    print(f"wrote {stem.with_suffix('.md')} and .json", file=sys.stderr)
    return 0


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return " ".join(["python -m benchmarks.gpu", *args])


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
