"""Distance to the limit: peak GEMM, generator FLOPs, the offline runtime ceiling and CPU runtimes.

* peak fp32 GEMM (torch.mm) at the served thread budget, and with one thread;
  bf16 only where the CPU has bf16 hardware (avx512_bf16 / AMX), else recorded as absent;
* FLOPs per image of the generator (torch.utils.flop_counter on the PyTorch module);
* offline throughput of the served CPU runtime (the spec's ``cpu_runtime``, run by the
  same runner class as the Triton model) per batch size with the served thread count:
  the best is the ceiling that served throughput is compared against;
* the same ONNX model on ONNX Runtime, OpenVINO and PyTorch (fp32 eager, bf16
  autocast), with PSNR of the uint8 images against PyTorch fp32, and a decision:
  the fastest runtime that keeps PSNR >= 40 dB.

Writes ``benchmarks/results/<date>-<machine>-roofline.{md,json}``; compare.py reads the JSON.

    python -m benchmarks.roofline
    python -m benchmarks.roofline --seconds 1 --batches 1 16   # quick
"""

from __future__ import annotations

import argparse
import functools
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from benchmarks.common import (
    GPU_LINE,
    RESULTS_DIR,
    OwnCpu,
    command_line,
    export_onnx,
    load_generator,
    machine_busy_seconds,
    machine_info,
    machine_line,
    resolve_weights,
    result_stem,
    today,
    wait_until_quiet,
    write_json,
)
from ecomgen_client.specs import PRODUCT_GAN
from export.triton_python.ecomgen_common import latents_from_seeds, one_hot, to_uint8_hwc

PSNR_FLOOR_DB = 40.0
SWITCH_GAIN = 0.10  # a new runtime must beat ORT by more than run-to-run noise to be worth wiring in
Feeds = dict[str, np.ndarray]


_OWN = OwnCpu()
FOREIGN: list[float] = []  # other jobs' load (cores) during each timing, for the report


def timed(fn: Callable[[], object], seconds: float, warmup: int = 3, windows: int = 5) -> float:
    """Median seconds per call over ``windows`` windows of ``seconds / windows`` each.

    Waits for a quiet machine first; the median shrugs off a short burst of someone else's work.
    """
    wait_until_quiet(quiet_s=1.0, timeout_s=120.0)
    for _ in range(warmup):
        fn()
    t0, busy0, own0 = time.perf_counter(), machine_busy_seconds(), _OWN.seconds()
    per_call = []
    for _ in range(windows):
        n, start = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= seconds / windows and n >= 2:
                break
        per_call.append(elapsed / n)
    t1, busy1, own1 = time.perf_counter(), machine_busy_seconds(), _OWN.seconds()
    FOREIGN.append(max(0.0, (busy1 - busy0) - (own1 - own0)) / (t1 - t0))
    return statistics.median(per_call)


# --- peak ----------------------------------------------------------------------------


def peak_gemm(threads: int, dtype: torch.dtype, sizes: tuple[int, ...], seconds: float) -> dict[str, float]:
    """Best GFLOP/s of a square torch.mm over ``sizes``."""
    torch.set_num_threads(threads)
    best: dict[str, float] = {"gflops": 0.0, "n": 0}
    for n in sizes:
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        per_call = timed(functools.partial(torch.mm, a, b), seconds)
        gflops = 2 * n**3 / per_call / 1e9
        if gflops > best["gflops"]:
            best = {"gflops": gflops, "n": n}
    return best


def flops_per_image(generator: torch.nn.Module, batch: int = 16) -> tuple[float, dict[str, float]]:
    """FLOPs of one image (multiply-adds count 2), from the PyTorch module; elementwise ops not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    feeds = make_feeds(batch)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        generator(torch.from_numpy(feeds["z"]), torch.from_numpy(feeds["class_onehot"]))
    by_op = {str(k): v / batch for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() / batch, by_op


# --- runtimes ----------------------------------------------------------------------


def make_feeds(batch: int, offset: int = 0) -> Feeds:
    """Generator inputs as the served model builds them: Philox latents, one-hot of mixed classes."""
    seeds = np.arange(offset, offset + batch, dtype=np.int64)
    classes = np.arange(batch) % len(PRODUCT_GAN.class_names)
    return {
        "z": latents_from_seeds(seeds, PRODUCT_GAN.latent_dim),
        "class_onehot": one_hot(classes, len(PRODUCT_GAN.class_names)),
    }


def served_runner(
    onnx_file: Path, threads: int, precision: str = PRODUCT_GAN.cpu_precision
) -> Callable[[Feeds], np.ndarray]:
    """The runner class the Triton model uses (export/triton_python/ecomgen_triton.cpu_runner)."""
    import importlib
    import types

    # ecomgen_triton imports triton_python_backend_utils, which only execute() needs.
    sys.modules.setdefault("triton_python_backend_utils", types.ModuleType("triton_python_backend_utils"))
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "export" / "triton_python"))
    cpu_runner = importlib.import_module("ecomgen_triton").cpu_runner
    params = {"runtime": PRODUCT_GAN.cpu_runtime, "intra_op_threads": str(threads), "precision": precision}
    runner = cpu_runner(str(onnx_file), params, max_batch=PRODUCT_GAN.max_batch_size)
    return lambda feeds: runner.run(feeds)["image"]


def served_label(precision: str = PRODUCT_GAN.cpu_precision) -> str:
    """The runtimes-table row of the served runner at ``precision`` (f32 or bf16)."""
    if precision == "bf16":
        return f"{PRODUCT_GAN.cpu_runtime} bf16 (served runner, bf16 hint)"
    return f"{PRODUCT_GAN.cpu_runtime} fp32 (served runner)"


SERVED = served_label()


def ort_runner(onnx_file: Path, threads: int) -> Callable[[Feeds], np.ndarray]:
    """ONNX Runtime configured exactly like export/triton_python/ecomgen_triton.onnx_session."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    return lambda feeds: sess.run(["image"], feeds)[0]


def openvino_runner(onnx_file: Path, threads: int, static: bool = False) -> Callable[[Feeds], np.ndarray]:
    """OpenVINO CPU plugin on the same ONNX file, one stream, fp32.

    ``static``: one compiled model per batch size (reshaped to it), which is how a served
    model would use OpenVINO at its preferred batch sizes; else one dynamic-batch model.
    """
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    requests: dict[int, Any] = {}

    def request_for(batch: int) -> Any:
        key = batch if static else -1
        if key not in requests:
            model = core.read_model(str(onnx_file))
            if static:
                model.reshape({t.get_any_name(): [batch, *t.get_partial_shape()[1:]] for t in model.inputs})
            requests[key] = core.compile_model(model, "CPU", config).create_infer_request()
        return requests[key]

    def run(feeds: Feeds) -> np.ndarray:
        request = request_for(next(iter(feeds.values())).shape[0])
        return np.asarray(request.infer(feeds)[0])

    return run


def torch_runner(generator: torch.nn.Module, threads: int, bf16: bool) -> Callable[[Feeds], np.ndarray]:
    def run(feeds: Feeds) -> np.ndarray:
        torch.set_num_threads(threads)
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = generator(torch.from_numpy(feeds["z"]), torch.from_numpy(feeds["class_onehot"]))
        return out.float().numpy()

    return run


def psnr(reference: np.ndarray, test: np.ndarray) -> float:
    mse = float(np.mean((reference.astype(np.float64) - test.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


@dataclass
class RuntimeResult:
    runtime: str
    images_per_s: dict[int, float]  # batch -> median images/s over the rounds (model run only)
    spread: dict[int, tuple[float, float]]  # batch -> (min, max) images/s over the rounds
    psnr_db: float
    max_uint8_diff: int
    error: str = ""

    @property
    def best(self) -> tuple[int, float]:
        if not self.images_per_s:
            return 0, 0.0
        b = max(self.images_per_s, key=lambda k: self.images_per_s[k])
        return b, self.images_per_s[b]


K = TypeVar("K")


def interleaved(
    cases: Mapping[K, Callable[[], object]], seconds: float, rounds: int, desc: str
) -> dict[K, list[float]]:
    """Seconds per call of every case, measured round-robin ``rounds`` times.

    On a shared VM the speed drifts by 10-20% over minutes; round-robin makes a slow phase
    hit every case alike instead of whichever happened to run then.
    """
    out: dict[K, list[float]] = {k: [] for k in cases}
    with tqdm(total=rounds * len(cases), desc=desc, unit="timing") as bar:
        for _ in range(rounds):
            for key, fn in cases.items():
                out[key].append(timed(fn, seconds))
                bar.update()
    return out


def compare_runtimes(
    onnx_file: Path, generator: torch.nn.Module, threads: int, batches: list[int], seconds: float, rounds: int
) -> list[RuntimeResult]:
    reference_feeds = make_feeds(64, offset=10_000)
    reference = to_uint8_hwc(torch_runner(generator, threads, bf16=False)(reference_feeds))
    factories: dict[str, Callable[[], Callable[[Feeds], np.ndarray]]] = {
        served_label("f32"): lambda: served_runner(onnx_file, threads, "f32"),
        "onnxruntime fp32": lambda: ort_runner(onnx_file, threads),
        "openvino fp32 (dynamic batch)": lambda: openvino_runner(onnx_file, threads),
        "openvino fp32 (static shape per batch)": lambda: openvino_runner(onnx_file, threads, static=True),
        served_label("bf16"): lambda: served_runner(onnx_file, threads, "bf16"),
        "pytorch fp32 eager (baseline)": lambda: torch_runner(generator, threads, bf16=False),
        "pytorch bf16 autocast": lambda: torch_runner(generator, threads, bf16=True),
    }
    runners, quality, failed = {}, {}, []
    for name, factory in factories.items():
        try:
            runners[name] = factory()
        except Exception as e:  # e.g. openvino not installable: report, don't abort the roofline
            failed.append(RuntimeResult(name, {}, {}, math.nan, -1, error=f"{type(e).__name__}: {e}"))
            continue
        images = to_uint8_hwc(runners[name](reference_feeds))
        quality[name] = (psnr(reference, images), int(np.abs(images.astype(np.int16) - reference).max()))
    feeds = {b: make_feeds(b) for b in batches}
    cases = {(n, b): functools.partial(run, feeds[b]) for n, run in runners.items() for b in batches}
    times = interleaved(cases, seconds, rounds, "runtimes")
    results = []
    for name in runners:
        speeds = {b: [b / t for t in times[(name, b)]] for b in batches}
        results.append(
            RuntimeResult(
                name,
                {b: statistics.median(v) for b, v in speeds.items()},
                {b: (min(v), max(v)) for b, v in speeds.items()},
                *quality[name],
            )
        )
    return results + failed


def served_sweep(
    onnx_file: Path, threads: int, batches: list[int], seconds: float, rounds: int
) -> dict[int, dict[str, float]]:
    """Served-runtime images/s per batch: the model run alone, and with the served pre/post."""
    run = served_runner(onnx_file, threads)

    def end_to_end(seeds: np.ndarray, classes: np.ndarray) -> np.ndarray:
        z = latents_from_seeds(seeds, PRODUCT_GAN.latent_dim)
        y = one_hot(classes, len(PRODUCT_GAN.class_names))
        return to_uint8_hwc(run({"z": z, "class_onehot": y}))

    cases: dict[tuple[int, str], Callable[[], object]] = {}
    for b in batches:
        cases[(b, "run")] = functools.partial(run, make_feeds(b))
        seeds, classes = np.arange(b, dtype=np.int64), np.arange(b) % len(PRODUCT_GAN.class_names)
        cases[(b, "e2e")] = functools.partial(end_to_end, seeds, classes)
    times = interleaved(cases, seconds, rounds, f"{PRODUCT_GAN.cpu_runtime} x{threads} threads")
    out = {}
    for b in batches:
        speed = [b / t for t in times[(b, "run")]]
        out[b] = {
            "images_per_s": statistics.median(speed),
            "min": min(speed),
            "max": max(speed),
            "e2e_images_per_s": statistics.median(b / t for t in times[(b, "e2e")]),
            "ms": statistics.median(times[(b, "run")]) * 1e3,
        }
    return out


# --- report ----------------------------------------------------------------------------


def decide(results: list[RuntimeResult]) -> tuple[RuntimeResult, str]:
    """The runtime to serve: ORT unless another one with PSNR >= the floor is clearly better.

    Clearly better = more than SWITCH_GAIN more images/s at its best batch (capacity under load)
    while giving up no more than SWITCH_GAIN at batch 1 (what a lone request waits for).
    """
    served = next(r for r in results if r.runtime == SERVED)
    notes, winners = [], []
    for r in results:
        if r is served or r.error:
            continue
        gain = r.best[1] / served.best[1] - 1
        b1 = r.images_per_s.get(1, math.nan) / served.images_per_s.get(1, math.nan) - 1
        if r.psnr_db < PSNR_FLOOR_DB:
            notes.append(f"{r.runtime}: PSNR {r.psnr_db:.1f} dB < {PSNR_FLOOR_DB:.0f} dB")
        elif gain > SWITCH_GAIN and not b1 < -SWITCH_GAIN:
            winners.append((gain, r))
            notes.append(f"{r.runtime}: {gain:+.0%} at best batch, {b1:+.0%} at batch 1")
        else:
            notes.append(f"{r.runtime}: {gain:+.0%} at best batch {r.best[0]}, {b1:+.0%} at batch 1")
    if not winners:
        return served, (
            f"keep {SERVED}; no other runtime is clearly better ("
            + "; ".join(notes)
            + f"). Clearly better = > {SWITCH_GAIN:.0%} more images/s at its best batch without losing "
            f"> {SWITCH_GAIN:.0%} at batch 1."
        )
    gain, best = max(winners, key=lambda w: w[0])
    return best, (
        f"switch to {best.runtime} ({'; '.join(notes)}); set it in the spec (cpu_runtime) and "
        "export/triton_python/ecomgen_triton.py."
    )


def render(payload: dict[str, Any], results: list[RuntimeResult], decision: str) -> str:
    info = payload["machine"]
    peak, ceiling = payload["peak_fp32_gflops"], payload["ceiling"]
    flops = payload["flops_per_image"]
    threads = payload["threads"]
    lines = [
        f"# product_gan: distance to the limit ({info['model']}, {info['cpus']} CPUs)",
        "",
        f"- **Date**: {today()}",
        f"- **Command**: `{payload['command']}`",
        f"- **Machine**: {machine_line(info)}",
        f"- **Weights**: {payload['weights']}",
        f"- **{GPU_LINE.split(':', 1)[0]}**:{GPU_LINE.split(':', 1)[1]}",
        f"- **Other jobs' load** during the timings (the machine is shared; each timing waits for "
        f"quiet first and takes the median of 5 windows): median {payload['foreign_cores']['median']:.2f}, "
        f"max {payload['foreign_cores']['max']:.2f} cores.",
        f"- **Thread budget**: {threads} (= the served instance's intra-op threads); "
        f"torch {torch.__version__}.",
        "",
        "## Peak compute",
        "",
        "| what | threads | GFLOP/s | GEMM size |",
        "|---|---:|---:|---:|",
    ]
    for row in payload["gemm"]:
        lines.append(f"| {row['what']} | {row['threads']} | {row['gflops']:,.1f} | {row['n']} |")
    lines += [
        "",
        f"bf16: {payload['bf16_note']}",
        "",
        "## Work per image",
        "",
        f"{flops / 1e6:,.1f} MFLOP per 64x48 image (multiply-add = 2 FLOPs; from "
        "`torch.utils.flop_counter.FlopCounterMode`; elementwise BN/ReLU/tanh not counted): "
        + ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in payload["flops_by_op"].items())
        + ".",
        "",
        f"At the measured peak ({peak:,.1f} GFLOP/s) the compute roof is {peak * 1e9 / flops:,.0f} images/s.",
        "",
        f"## Offline {SERVED} ({threads} intra-op threads, as served)",
        "",
        "| batch | ms / batch | images/s (run) | min–max over rounds | images/s (+ seed->latent, uint8) | "
        "compute efficiency |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for b, row in payload["served_sweep"].items():
        eff = row["images_per_s"] * flops / (peak * 1e9)
        lines.append(
            f"| {b} | {row['ms']:.2f} | {row['images_per_s']:,.1f} | {row['min']:,.0f}–{row['max']:,.0f} | "
            f"{row['e2e_images_per_s']:,.1f} | {eff:.1%} |"
        )
    lines += [
        "",
        f"**Ceiling**: {ceiling['images_per_s']:,.1f} images/s at batch {ceiling['batch']} "
        f"= {ceiling['images_per_s'] * flops / 1e9:,.1f} GFLOP/s = "
        f"{ceiling['images_per_s'] * flops / (peak * 1e9):.1%} of the measured fp32 peak. "
        "Serving efficiency (served / ceiling) is in the comparison report.",
        "",
        f"## CPU runtimes on the same ONNX model ({threads} threads)",
        "",
        f"Median images/s over {payload['rounds']} interleaved rounds (min–max in brackets).",
        "",
        "| runtime | " + " | ".join(f"batch {b} images/s" for b in payload["runtime_batches"]) + " | "
        "PSNR vs PyTorch fp32 (uint8) | max uint8 diff |",
        "|---|" + "---:|" * (len(payload["runtime_batches"]) + 2),
    ]
    for r in results:
        if r.error:
            lines.append(f"| {r.runtime} | not run: {r.error[:200]} |")
            continue
        cells = " | ".join(
            f"{r.images_per_s[b]:,.1f} ({r.spread[b][0]:,.0f}–{r.spread[b][1]:,.0f})"
            for b in payload["runtime_batches"]
        )
        ps = "∞ (identical)" if math.isinf(r.psnr_db) else f"{r.psnr_db:.1f} dB"
        lines.append(f"| {r.runtime} | {cells} | {ps} | {r.max_uint8_diff} |")
    lines += [
        "",
        f"**Decision**: {decision}",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=PRODUCT_GAN.cpu_threads, help="default: the served threads")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4, 8, 16, 32, 64])
    p.add_argument("--runtime-batches", type=int, nargs="+", default=[1, 16, 32, 64])
    p.add_argument("--seconds", type=float, default=1.0, help="timing window per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every timing")
    p.add_argument("--gemm-sizes", type=int, nargs="+", default=[1024, 2048, 3072])
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--random-weights", action="store_true")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    opt = p.parse_args(argv)

    info = machine_info()
    weights = resolve_weights(opt.checkpoint, random=opt.random_weights)
    generator = load_generator(weights)
    gemm = []
    for threads in tqdm(sorted({1, opt.threads}), desc="peak fp32 GEMM", unit="config"):
        # A peak: the best of the rounds, not the median.
        runs = [
            peak_gemm(threads, torch.float32, tuple(opt.gemm_sizes), opt.seconds) for _ in range(opt.rounds)
        ]
        gemm.append({"what": "fp32 torch.mm", "threads": threads, **max(runs, key=lambda r: r["gflops"])})
    if info["has_bf16"]:
        best = peak_gemm(opt.threads, torch.bfloat16, tuple(opt.gemm_sizes), opt.seconds)
        gemm.append({"what": "bf16 torch.mm", "threads": opt.threads, **best})
        bf16_note = "the CPU has bf16 hardware; bf16 GEMM peak measured above."
    else:
        bf16_note = (
            "not measured: the CPU has neither avx512_bf16 nor AMX (flags: "
            f"{', '.join(info['vector_flags'])}), so bf16 runs through conversions on fp32 units "
            "and cannot beat fp32; the PyTorch bf16 autocast row below shows it."
        )
    peak = max(g["gflops"] for g in gemm if g["what"].startswith("fp32") and g["threads"] == opt.threads)
    flops, by_op = flops_per_image(generator)

    with tempfile.TemporaryDirectory(prefix="ecomgen-roofline-") as tmp:
        onnx_file = export_onnx(load_generator(weights), Path(tmp) / "model.onnx")
        sweep = served_sweep(onnx_file, opt.threads, opt.batches, opt.seconds, opt.rounds)
        results = compare_runtimes(
            onnx_file, generator, opt.threads, opt.runtime_batches, opt.seconds, opt.rounds
        )
    best_batch = max(sweep, key=lambda b: sweep[b]["images_per_s"])
    winner, decision = decide(results)
    payload = {
        "command": command_line(),
        "date": today(),
        "machine": info,
        "weights": weights.label,
        "threads": opt.threads,
        "gemm": gemm,
        "bf16_note": bf16_note,
        "peak_fp32_gflops": peak,
        "flops_per_image": flops,
        "flops_by_op": by_op,
        "served_sweep": sweep,
        "ceiling": {
            "images_per_s": sweep[best_batch]["images_per_s"],
            "batch": best_batch,
            "threads": opt.threads,
            "runtime": SERVED,
        },
        "runtime_batches": opt.runtime_batches,
        "rounds": opt.rounds,
        "runtimes": [asdict(r) for r in results],
        "decision": {"runtime": winner.runtime, "why": decision},
        "foreign_cores": {"median": statistics.median(FOREIGN), "max": max(FOREIGN)},
    }
    stem = opt.out / result_stem("roofline", info)
    write_json(stem.with_suffix(".json"), payload)
    stem.with_suffix(".md").write_text(render(payload, results, decision))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
