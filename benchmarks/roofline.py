"""Distance to the limit for every served network: peak GEMM, FLOPs, the served runner's ceiling, runtimes.

* peak fp32 GEMM (torch.mm) at the served thread budget, and with one thread; bf16 only
  where the CPU has bf16 hardware (avx512_bf16 / AMX), else recorded as absent;
* for every network of the registry (``REGISTRY.networks()``, or ``--networks``):

  - FLOPs per item (``torch.utils.flop_counter`` on the PyTorch module, at the profile's
    opt shape);
  - offline throughput of the runner the server runs (``ecomgen.serving.runners.make_runner``
    with the runtime ``ecomgen serve`` resolves on this host: the spec's ``cpu_runtime``, or
    the calibrated choice) per batch size up to max_batch_size; the best is the ceiling;
  - every CPU runtime and PyTorch (fp32 eager, bf16 autocast) on the same ONNX file, with
    PSNR of the uint8 outputs against PyTorch fp32, and beside it the calibration's choice
    measured now (``ecomgen.serving.calibrate``: the fastest runtime within 40 dB);

* for every served model: FLOPs per row, the network ceiling (its networks back to back,
  each at its best batch) and the pipeline ceiling: the whole served pipeline offline in
  one process (the fused Python model's code, ``FusedPipeline``, through ``run_batch``:
  checks, pre/post and networks) on payloads from the contract.

Writes ``benchmarks/results/<date>-<machine>-roofline.{md,json}``; compare.py reads the JSON.

    python -m benchmarks.roofline
    python -m benchmarks.roofline --networks product_gan_generator --seconds 0.5 --rounds 1   # quick
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import statistics
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from tqdm import tqdm

from benchmarks import harness, report
from benchmarks.payloads import PayloadMaker
from benchmarks.report import table
from ecomgen.launcher import LoadMeter
from ecomgen.numerics import PARITY_MIN_PSNR_DB
from ecomgen.registry import REGISTRY
from ecomgen.serving.calibrate import calibrate, output_parity
from ecomgen.serving.runners import RUNTIMES, make_runner
from ecomgen.spec import NetworkSpec, ServedModel

Feeds = dict[str, np.ndarray]
Outputs = dict[str, np.ndarray]

_LOAD = LoadMeter()
FOREIGN: list[float] = []  # other jobs' load (cores) during each timing, for the report
WAIT_QUIET = [True]


def timed(fn: Callable[[], object], seconds: float, warmup: int = 3, windows: int = 5) -> float:
    """Median seconds per call over ``windows`` windows of ``seconds / windows`` each.

    Waits for a quiet machine first; the median shrugs off a short burst of someone else's work.
    """
    if WAIT_QUIET[0]:
        harness.wait_until_quiet(quiet_s=1.0, timeout_s=120.0)
    for _ in range(warmup):
        fn()
    before = _LOAD.read()
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
    FOREIGN.append(before.foreign_cores(_LOAD.read()))
    return statistics.median(per_call)


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


def flops_per_item(module: torch.nn.Module, net: NetworkSpec) -> tuple[float, dict[str, float]]:
    """FLOPs of one item at the opt shape (multiply-adds count 2); elementwise ops not counted."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = net.profile.opt_batch
    args = [torch.from_numpy(a) for a in net.sample_inputs(batch).values()]
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        module(*args)
    by_op = {str(k): v / batch for k, v in counter.get_flop_counts()["Global"].items()}
    return counter.get_total_flops() / batch, by_op


# --- runtimes ----------------------------------------------------------------------


def torch_runner(
    module: torch.nn.Module, net: NetworkSpec, threads: int, bf16: bool
) -> Callable[[Feeds], Outputs]:
    def run(feeds: Feeds) -> Outputs:
        torch.set_num_threads(threads)
        args = [torch.from_numpy(feeds[t.name]) for t in net.inputs]
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            out = module(*args)
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return {t.name: o.float().numpy() for t, o in zip(net.outputs, outs, strict=True)}

    return run


def runner_factories(
    module: torch.nn.Module, net: NetworkSpec, onnx_file: Path, threads: int, served: str
) -> dict[str, Callable[[], Callable[[Feeds], Outputs]]]:
    """Label -> a factory of ``feeds -> outputs``; the CPU runtimes are the serving runners themselves."""
    out: dict[str, Callable[[], Callable[[Feeds], Outputs]]] = {}
    for runtime in RUNTIMES:
        label = f"{runtime} (served)" if runtime == served else runtime
        out[label] = functools.partial(
            lambda r: make_runner(onnx_file, r, threads, net.max_batch_size).run, runtime
        )
    out["pytorch fp32 eager (baseline)"] = lambda: torch_runner(module, net, threads, bf16=False)
    out["pytorch bf16 autocast"] = lambda: torch_runner(module, net, threads, bf16=True)
    return out


@dataclass
class RuntimeResult:
    runtime: str
    items_per_s: dict[int, float]  # batch -> median items/s over the rounds (network run only)
    spread: dict[int, tuple[float, float]]  # batch -> (min, max) items/s over the rounds
    psnr_db: float  # lowest over the outputs, uint8 levels against PyTorch fp32
    max_uint8_diff: int
    error: str = ""

    @property
    def best(self) -> tuple[int, float]:
        if not self.items_per_s:
            return 0, 0.0
        b = max(self.items_per_s, key=lambda k: self.items_per_s[k])
        return b, self.items_per_s[b]


def quality(net: NetworkSpec, out: Outputs, ref: Outputs) -> tuple[float, int]:
    """Lowest PSNR and largest uint8 difference over the outputs, quantised as clients see them."""
    _, psnr, diff = output_parity(net, out, ref)
    return psnr, diff


def compare_runtimes(
    module: torch.nn.Module,
    net: NetworkSpec,
    onnx_file: Path,
    threads: int,
    served: str,
    batches: list[int],
    seconds: float,
    rounds: int,
) -> list[RuntimeResult]:
    reference_feeds = net.sample_inputs(net.profile.opt_batch, seed=10_000)
    reference = torch_runner(module, net, threads, bf16=False)(reference_feeds)
    runners, scores, failed = {}, {}, []
    for name, factory in runner_factories(module, net, onnx_file, threads, served).items():
        try:
            runners[name] = factory()
            scores[name] = quality(net, runners[name](reference_feeds), reference)
        except Exception as e:  # e.g. a runtime missing here: report, don't abort the roofline
            runners.pop(name, None)
            failed.append(RuntimeResult(name, {}, {}, math.nan, -1, error=f"{type(e).__name__}: {e}"))
    feeds = {b: net.sample_inputs(b) for b in batches}
    cases = {(n, b): functools.partial(run, feeds[b]) for n, run in runners.items() for b in batches}
    times = interleaved(cases, seconds, rounds, f"{net.name}: runtimes")
    results = []
    for name in runners:
        speeds = {b: [b / t for t in times[(name, b)]] for b in batches}
        results.append(
            RuntimeResult(
                name,
                {b: statistics.median(v) for b, v in speeds.items()},
                {b: (min(v), max(v)) for b, v in speeds.items()},
                *scores[name],
            )
        )
    return results + failed


def served_sweep(
    net: NetworkSpec,
    onnx_file: Path,
    runtime: str,
    threads: int,
    batches: list[int],
    seconds: float,
    rounds: int,
) -> dict[int, dict[str, float]]:
    """Items/s of the served runner (network only) per batch size."""
    run = make_runner(onnx_file, runtime, threads, net.max_batch_size).run
    cases = {b: functools.partial(run, net.sample_inputs(b)) for b in batches}
    times = interleaved(cases, seconds, rounds, f"{net.name}: {runtime} x{threads} threads")
    out = {}
    for b in batches:
        speed = [b / t for t in times[b]]
        out[b] = {
            "items_per_s": statistics.median(speed),
            "min": min(speed),
            "max": max(speed),
            "ms": statistics.median(times[b]) * 1e3,
        }
    return out


def pipeline_sweep(
    model: ServedModel, repository: Path, batches: list[int], seconds: float, rounds: int
) -> dict[int, dict[str, float]]:
    """Rows/s of the whole served pipeline offline: FusedPipeline through run_batch (``model`` is fused)."""
    from google.protobuf import json_format

    from ecomgen.serving.handlers.pipeline import FusedPipeline
    from ecomgen.serving.step import Request, StepConfig, run_batch
    from export.repository import model_configs

    (repo_model,) = model_configs(model, "cpu")
    config = json_format.MessageToDict(repo_model.config, preserving_proto_field_name=True)
    pipeline = FusedPipeline(StepConfig.from_model_config(config, repository / model.name / "1"))

    def call(requests: list[Request]) -> None:
        for result in run_batch(pipeline, requests):
            if isinstance(result, Exception):
                raise result

    cases = {}
    for b in batches:
        p = PayloadMaker(model.contract, rows=b)()
        cases[b] = functools.partial(call, [Request(p.inputs)])
    times = interleaved(cases, seconds, rounds, f"{model.name}: served pipeline")
    return {
        b: {"rows_per_s": statistics.median(b / t for t in times[b]), "ms": statistics.median(times[b]) * 1e3}
        for b in batches
    }


def batch_sizes(max_batch: int, wanted: list[int] | None) -> list[int]:
    """``wanted`` capped at max_batch, else the powers of two up to it (and max_batch itself)."""
    top = max(1, max_batch)
    if wanted:
        return sorted({min(b, top) for b in wanted})
    return sorted({*(1 << i for i in range(top.bit_length()) if (1 << i) <= top), top})


# --- per network and per model -------------------------------------------------------


def measure_network(
    model: ServedModel,
    net: NetworkSpec,
    module: torch.nn.Module,
    onnx_file: Path,
    served: str,
    opt: argparse.Namespace,
    calibration_dir: Path,
) -> dict[str, Any]:
    threads = opt.threads or model.cpu_threads
    flops, by_op = flops_per_item(module, net)
    sweep = served_sweep(
        net, onnx_file, served, threads, batch_sizes(net.max_batch_size, opt.batches), opt.seconds, opt.rounds
    )
    best = max(sweep, key=lambda b: sweep[b]["items_per_s"])
    runtime_batches = batch_sizes(
        net.max_batch_size, opt.runtime_batches or [1, net.profile.opt_batch, net.max_batch_size]
    )
    results = compare_runtimes(
        module, net, onnx_file, threads, served, runtime_batches, opt.seconds, opt.rounds
    )
    # The calibration's batch when the table measured it, else the table's largest batch.
    compared_at = net.profile.opt_batch if net.profile.opt_batch in runtime_batches else max(runtime_batches)
    # The calibration measured now, exactly as `ecomgen build` would (its own timing and rule).
    choice = calibrate(
        net, onnx_file, calibration_dir, threads, seconds=opt.calibration_seconds, refresh=True
    )
    return {
        "model": model.name,
        "threads": threads,
        "flops_per_item": flops,
        "flops_by_op": by_op,
        "served_runtime": served,
        "sweep": sweep,
        "ceiling": {"items_per_s": sweep[best]["items_per_s"], "batch": best},
        "runtime_batches": runtime_batches,
        "runtimes": [asdict(r) for r in results],
        "calibration": {
            "runtime": choice.runtime,
            "batch": choice.batch,
            "measurements": [asdict(m) for m in choice.measurements],
        },
        "fastest_passing": fastest_passing(results, compared_at),
        "fastest_passing_batch": compared_at,
    }


def fastest_passing(results: list[RuntimeResult], batch: int) -> str:
    """The fastest row of the runtimes table at ``batch`` whose PSNR clears the parity threshold."""
    ok = [r for r in results if not r.error and r.psnr_db >= PARITY_MIN_PSNR_DB and batch in r.items_per_s]
    return max(ok, key=lambda r: r.items_per_s[batch]).runtime if ok else "none"


def model_summary(
    model: ServedModel, networks: Mapping[str, dict[str, Any]], pipeline: dict[int, dict[str, float]] | None
) -> dict[str, Any]:
    """FLOPs per row and ceilings of a served model (each network runs once per row)."""
    nets = [networks[n.name] for n in model.networks if n.name in networks]
    # An unbatched model (a shopper's history in, several images out) runs its networks on several
    # items per request, so "once per row" does not hold: no FLOPs per row or network ceiling.
    complete = len(nets) == len(model.networks) and model.contract.batched
    runtimes = {n["served_runtime"] for n in nets}
    precision = (
        "bf16" if runtimes == {"openvino-bf16"} else ("fp32" if "openvino-bf16" not in runtimes else "mixed")
    )
    ceiling = 1.0 / sum(1.0 / n["ceiling"]["items_per_s"] for n in nets) if nets and complete else None
    out: dict[str, Any] = {
        "networks": [n.name for n in model.networks],
        "flops_per_row": sum(n["flops_per_item"] for n in nets) if complete else None,
        "network_ceiling": ceiling,
        "precision": precision,
        "pipeline_sweep": pipeline,
    }
    if pipeline:
        best = max(pipeline, key=lambda b: pipeline[b]["rows_per_s"])
        out["pipeline_ceiling"] = {"rows_per_s": pipeline[best]["rows_per_s"], "batch": best}
    return out


# --- report ----------------------------------------------------------------------------


def render(payload: dict[str, Any]) -> str:
    info = payload["machine"]
    peak = payload["peak_fp32_gflops"]
    lines = [
        f"# Distance to the limit: every served network ({info['model']}, {info['cpus']} CPUs)",
        "",
        *report.run_lines(info, payload["wall_s"], payload["command"], payload["date"]),
        f"- **Weights**: {payload['weights']}",
        report.bullet(report.GPU_LINE),
        "- **Other jobs' load** during the timings (the machine is shared; "
        + ("each timing waits for quiet first and " if payload["wait_quiet"] else "no waiting for quiet; ")
        + f"each takes the median of 5 windows): median {payload['foreign_cores']['median']:.2f}, "
        f"max {payload['foreign_cores']['max']:.2f} cores.",
        f"- **Thread budget**: each network's served threads (its model's `cpu_threads`); "
        f"torch {torch.__version__}.",
        "",
        "## Peak compute",
        "",
    ]
    gemm = [(g["what"], g["threads"], f"{g['gflops']:,.1f}", g["n"]) for g in payload["gemm"]]
    lines += table(("what", "threads", "GFLOP/s", "GEMM size"), gemm, "lrrr")
    lines += ["", f"bf16: {payload['bf16_note']}", "", "## Served models", ""]
    lines += [
        "| model | networks | MFLOP per row | network ceiling rows/s (back to back) | served pipeline rows/s "
        "(best batch) | pipeline / network ceiling | compute efficiency of the network ceiling |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, m in payload["models"].items():
        flops, ceiling = m["flops_per_row"], m["network_ceiling"]
        pipe = m.get("pipeline_ceiling") or {}
        roof = payload.get("peak_bf16_gflops") if m["precision"] == "bf16" else peak
        eff = (
            f"{ceiling * flops / (roof * 1e9):.1%} of {m['precision']} peak"
            if ceiling and flops and roof
            else "–"
        )
        lines.append(
            f"| {name} | {', '.join(m['networks'])} | {_mflop(flops)} | {_num(ceiling)} | "
            f"{_num(pipe.get('rows_per_s'))} ({pipe.get('batch', '–')}) | "
            f"{_pct(pipe.get('rows_per_s'), ceiling)} | {eff} |"
        )
    for name, n in payload["networks"].items():
        lines += network_section(name, n, peak)
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}"


def _mflop(x: float | None) -> str:
    return "–" if x is None else f"{x / 1e6:,.1f}"


def _pct(a: float | None, b: float | None) -> str:
    return f"{a / b:.0%}" if a and b else "–"


def network_section(name: str, n: dict[str, Any], peak: float) -> list[str]:
    flops = n["flops_per_item"]
    ceiling = n["ceiling"]
    lines = [
        "",
        f"## {name} ({n['model']})",
        "",
        f"{flops / 1e6:,.1f} MFLOP per item at the opt shape (multiply-add = 2 FLOPs; "
        "`torch.utils.flop_counter.FlopCounterMode`; elementwise ops not counted): "
        + ", ".join(f"{k} {v / 1e6:,.1f} M" for k, v in n["flops_by_op"].items())
        + f". At the fp32 peak ({peak:,.1f} GFLOP/s) the compute roof is {peak * 1e9 / flops:,.0f} items/s.",
        "",
        f"### Offline served runner: {n['served_runtime']} ({n['threads']} threads, as served)",
        "",
        "| batch | ms / batch | items/s | min–max over rounds | compute efficiency (fp32 peak) |",
        "|---:|---:|---:|---:|---:|",
    ]
    for b, row in n["sweep"].items():
        lines.append(
            f"| {b} | {row['ms']:.2f} | {row['items_per_s']:,.1f} | {row['min']:,.0f}–{row['max']:,.0f} | "
            f"{row['items_per_s'] * flops / (peak * 1e9):.1%} |"
        )
    lines += [
        "",
        f"**Ceiling**: {ceiling['items_per_s']:,.1f} items/s at batch {ceiling['batch']} = "
        f"{ceiling['items_per_s'] * flops / 1e9:,.1f} GFLOP/s.",
        "",
        f"### Runtimes on the same ONNX file ({n['threads']} threads)",
        "",
        "| runtime | " + " | ".join(f"batch {b} items/s" for b in n["runtime_batches"]) + " | "
        "PSNR vs PyTorch fp32 (uint8, worst output) | max uint8 diff |",
        "|---|" + "---:|" * (len(n["runtime_batches"]) + 2),
    ]
    for r in n["runtimes"]:
        if r["error"]:
            lines.append(f"| {r['runtime']} | not run: {r['error'][:200]} |")
            continue
        cells = " | ".join(
            f"{r['items_per_s'][b]:,.1f} ({r['spread'][b][0]:,.0f}–{r['spread'][b][1]:,.0f})"
            for b in n["runtime_batches"]
        )
        ps = "∞ (identical)" if math.isinf(r["psnr_db"]) else f"{r['psnr_db']:.1f} dB"
        lines.append(f"| {r['runtime']} | {cells} | {ps} | {r['max_uint8_diff']} |")
    cal = n["calibration"]
    shown = "; ".join(
        f"{m['runtime']} {m['items_per_s']:,.0f}/s, {m['min_psnr_db']:.1f} dB"
        + ("" if m["passed"] else " (fails)")
        for m in cal["measurements"]
    )
    agree = "agrees" if cal["runtime"] == n["fastest_passing"].removesuffix(" (served)") else "differs"
    lines += [
        "",
        f"**Calibration** (`ecomgen.serving.calibrate`, measured now at batch {cal['batch']}: the fastest "
        f"runtime within {PARITY_MIN_PSNR_DB:.0f} dB of ONNX Runtime fp32): **{cal['runtime']}** [{shown}]. "
        f"Served: **{n['served_runtime']}** (the choice `ecomgen build` recorded for this host, or the "
        "spec's pin). "
        f"This table's fastest runtime within {PARITY_MIN_PSNR_DB:.0f} dB at batch "
        f"{n['fastest_passing_batch']}: "
        f"{n['fastest_passing']} ({agree} with the calibration).",
    ]
    return lines


# --- main --------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    names = list(REGISTRY.networks())
    p.add_argument(
        "--networks", nargs="+", choices=names, default=names, help="default: every served network"
    )
    p.add_argument("--threads", type=int, default=None, help="default: each network's served threads")
    p.add_argument("--batches", type=int, nargs="+", default=None, help="default: powers of two to max_batch")
    p.add_argument("--runtime-batches", type=int, nargs="+", default=None, help="default: 1, opt, max")
    p.add_argument("--seconds", type=float, default=1.0, help="timing window per measurement")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of every timing")
    p.add_argument("--calibration-seconds", type=float, default=1.5, help="per runtime, as `ecomgen build`")
    p.add_argument("--gemm-sizes", type=int, nargs="+", default=[1024, 2048, 3072])
    p.add_argument(
        "--pipelines", action=argparse.BooleanOptionalAction, default=True, help="served pipelines"
    )
    harness.add_arguments(p, runtime=False)
    return p.parse_args(argv)


def peak_compute(
    opt: argparse.Namespace, info: dict[str, Any], threads: int
) -> tuple[list[dict[str, Any]], str]:
    gemm = []
    for t in tqdm(sorted({1, threads}), desc="peak fp32 GEMM", unit="config"):
        # A peak: the best of the rounds, not the median.
        runs = [peak_gemm(t, torch.float32, tuple(opt.gemm_sizes), opt.seconds) for _ in range(opt.rounds)]
        gemm.append({"what": "fp32 torch.mm", "threads": t, **max(runs, key=lambda r: r["gflops"])})
    if info["has_bf16"]:
        best = peak_gemm(threads, torch.bfloat16, tuple(opt.gemm_sizes), opt.seconds)
        gemm.append({"what": "bf16 torch.mm", "threads": threads, **best})
        return gemm, "the CPU has bf16 hardware; bf16 GEMM peak measured above."
    return gemm, (
        f"not measured: the CPU has neither avx512_bf16 nor AMX ({info['isa']}), so bf16 runs through "
        "conversions on fp32 units and cannot beat fp32; the PyTorch bf16 autocast rows show it."
    )


def measure_all(
    opt: argparse.Namespace, models: list[ServedModel], owners: Mapping[str, ServedModel]
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]], str]:
    """Every network asked for, then every model whose networks were all measured: (networks,
    models, the weights' label)."""
    networks: dict[str, dict[str, Any]] = {}
    summaries: dict[str, dict[str, Any]] = {}
    with harness.Harness(models, opt.weights, servers=0, prefix="ecomgen-roofline-") as h:
        for model in h.models:
            modules = h.weights.modules(model)
            for net in model.networks:
                if net.name not in owners or net.name in networks:
                    continue
                served = h.runtimes[net.name].split(" ", 1)[0]  # "<runtime> ($ENV)" when forced
                networks[net.name] = measure_network(
                    model,
                    net,
                    modules[net.name],
                    h.onnx_dir / f"{net.name}.onnx",
                    served,
                    opt,
                    h.tmp / "calibration",
                )
        for model in REGISTRY:  # every model whose networks were all measured (shared ones too)
            if not model.networks or any(n.name not in networks for n in model.networks):
                continue
            pipeline = None
            if opt.pipelines:
                # The fused Python model's directory: every network's ONNX file and runtime choice.
                fused = dataclasses.replace(model, fuse_on_cpu=True)
                repository, _ = h.repository_for([fused], f"pipeline-{model.name}")
                top = model.contract.max_batch_size if model.contract.batched else 1
                pipeline = pipeline_sweep(
                    fused, repository, batch_sizes(top, opt.batches), opt.seconds, opt.rounds
                )
            summaries[model.name] = model_summary(model, networks, pipeline)
    return networks, summaries, h.weights_label


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    WAIT_QUIET[0] = opt.wait_quiet
    started = time.monotonic()
    info = harness.machine_info()
    registry_nets = REGISTRY.networks()
    owners = {name: registry_nets[name][0] for name in opt.networks}
    models = [m for m in REGISTRY if m.name in {o.name for o in owners.values()}]
    harness.resolve_weights(opt.weights, models)  # missing checkpoints fail before the GEMM timings
    threads = opt.threads or max(m.cpu_threads for m in models)
    gemm, bf16_note = peak_compute(opt, info, threads)
    peak = max(g["gflops"] for g in gemm if g["what"].startswith("fp32") and g["threads"] == threads)
    bf16_peak = max((g["gflops"] for g in gemm if g["what"].startswith("bf16")), default=None)
    networks, summaries, weights = measure_all(opt, models, owners)
    payload = {
        "command": report.command_line(),
        "date": report.today(),
        "machine": info,
        "weights": weights,
        "threads": threads,
        "gemm": gemm,
        "bf16_note": bf16_note,
        "peak_fp32_gflops": peak,
        "peak_bf16_gflops": bf16_peak,
        "calibration_cache": str(harness.CALIBRATION_DIR),
        "networks": networks,
        "models": summaries,
        "wait_quiet": opt.wait_quiet,
        "foreign_cores": {"median": statistics.median(FOREIGN), "max": max(FOREIGN)},
        "wall_s": time.monotonic() - started,
    }
    stem = opt.out / report.result_stem("roofline", info)
    report.write_json(stem.with_suffix(".json"), payload)
    stem.with_suffix(".md").write_text(render(payload))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
