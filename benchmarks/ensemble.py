"""Any ensemble of the registry on the embedded Triton: overhead from Triton's statistics, and load.

1. **Overhead.** Requests one at a time (no batching, no queueing), then Triton's own
   statistics: the ensemble's average request latency against the sum of its steps'
   compute times (compute_input + compute_infer + compute_output per request). The target
   is a ratio <= 1.15.
2. **Load.** Locust on the model (payloads from its contract, one row per request) at a
   few concurrencies: requests/s and latency percentiles.

``--model`` is any served model that is a Triton ensemble on the cpu target (``tryon``,
``tryon_bytes``; later ``product_detail``, ``personalize``). A model the cpu target fuses
into one Python model (``fuse_on_cpu``, e.g. ``product_gan``) has no ensemble to measure;
``--unfused`` serves it as the ensemble of its steps instead, as the gpu target does.

    python -m benchmarks.ensemble --model tryon           # ~3 min
    python -m benchmarks.ensemble --model tryon --requests 20 --concurrency 1 --seconds 5 --out /tmp/b
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from benchmarks.common import (
    GPU_LINE,
    RESULTS_DIR,
    WEIGHT_CHOICES,
    CpuSampler,
    build_repository,
    bullet,
    command_line,
    export_networks,
    infer_inputs,
    machine_info,
    machine_line,
    resolve_weights,
    result_stem,
    today,
    triton_server,
    wait_until_quiet,
    with_runtime,
    write_json,
)
from benchmarks.compare import run_locust
from benchmarks.payloads import PayloadMaker, describe
from ecomgen.registry import REGISTRY
from ecomgen.serving.runners import RUNTIMES
from ecomgen.spec import ServedModel, wire

TARGET_RATIO = 1.15
STAT_KEYS = ("success", "queue", "compute_input", "compute_infer", "compute_output")


def ensemble_steps(model: ServedModel) -> list[str]:
    """The Triton models the cpu target's ensemble runs, in order; ValueError if it is no ensemble."""
    from export.repository import model_configs

    top = model_configs(model, "cpu")[0].config
    if top.platform != "ensemble":
        why = "fuse_on_cpu: one Python model" if model.fuse_on_cpu else "a single step"
        raise ValueError(f"{model.name} is not an ensemble on the cpu target ({why}); try --unfused")
    return [w.step.model_name for w in wire(model)]


def model_stats(client: grpcclient.InferenceServerClient) -> dict[str, dict[str, tuple[int, int]]]:
    """model -> {stat: (count, ns)} for every model of the server."""
    out = {}
    for s in client.get_inference_statistics("").model_stats:
        i = s.inference_stats
        out[s.name] = {k: (int(getattr(i, k).count), int(getattr(i, k).ns)) for k in STAT_KEYS}
        out[s.name]["executions"] = (int(s.execution_count), 0)
        out[s.name]["rows"] = (int(s.inference_count), 0)  # success counts requests, this rows
    return out


def rows_per_execution(before: dict[str, Any], after: dict[str, Any], model: str) -> float:
    """The batching a step achieved: rows computed per execution (Triton counts rows as inferences)."""
    rows = after[model]["rows"][0] - before[model]["rows"][0]
    runs = after[model]["executions"][0] - before[model]["executions"][0]
    return rows / runs if runs else float("nan")


def per_request_ms(before: dict[str, Any], after: dict[str, Any], model: str, key: str) -> float:
    c = after[model][key][0] - before[model][key][0]
    ns = after[model][key][1] - before[model][key][1]
    return ns / c / 1e6 if c else float("nan")


def overhead(url: str, model: ServedModel, requests: int, quiet: Callable[[], float]) -> dict[str, Any]:
    """Sequential requests, then the ensemble's latency against its steps' compute (Triton statistics)."""
    steps = ensemble_steps(model)
    maker = PayloadMaker(model.contract, rows=1)
    payloads = [maker() for _ in range(8)]  # a few distinct requests, cycled
    with grpcclient.InferenceServerClient(url) as client:

        def call(i: int) -> None:
            p = payloads[i % len(payloads)]
            outputs = [grpcclient.InferRequestedOutput(n) for n in p.outputs]
            client.infer(
                model.name, infer_inputs(p.inputs, model.name), outputs=outputs, client_timeout=120.0
            )

        for i in range(5):  # warm-up, not counted
            call(i)
        quiet()
        before = model_stats(client)
        client_ms = []
        for i in range(requests):
            t0 = time.perf_counter()
            call(i)
            client_ms.append((time.perf_counter() - t0) * 1000)
        after = model_stats(client)
    rows: list[dict[str, Any]] = []
    for step in steps:
        compute = sum(
            per_request_ms(before, after, step, k)
            for k in ("compute_input", "compute_infer", "compute_output")
        )
        rows.append(
            {
                "step": step,
                "compute_ms": compute,
                "infer_ms": per_request_ms(before, after, step, "compute_infer"),
                "queue_ms": per_request_ms(before, after, step, "queue"),
                "request_ms": per_request_ms(before, after, step, "success"),
            }
        )
    ensemble_ms = per_request_ms(before, after, model.name, "success")
    steps_ms = sum(r["compute_ms"] for r in rows)
    return {
        "requests": requests,
        "request": describe(payloads[0], model.contract),
        "steps": rows,
        "ensemble_ms": ensemble_ms,
        "sum_steps_compute_ms": steps_ms,
        "ratio": ensemble_ms / steps_ms,
        "client_p50_ms": float(np.percentile(client_ms, 50)),
        "client_mean_ms": float(statistics.fmean(client_ms)),
    }


def render(
    model: ServedModel,
    opt: argparse.Namespace,
    info: dict[str, Any],
    weights: str,
    runtimes: dict[str, str],
    result: dict[str, Any],
    loads: list[dict[str, Any]],
    wall_s: float,
) -> str:
    verdict = "meets" if result["ratio"] <= TARGET_RATIO else "misses"
    nets = ", ".join(f"{n} on {r}" for n, r in runtimes.items())
    shape = " (served unfused: fuse_on_cpu off)" if opt.unfused else ""
    lines = [
        f"# {model.name} on the embedded Triton ({info['model']}, {info['cpus']} CPUs)",
        "",
        f"- **Date**: {today()}",
        f"- **Command**: `{command_line()}` (took {wall_s / 60:.1f} min)",
        f"- **Machine**: {machine_line(info)}",
        bullet(GPU_LINE),
        f"- **Weights**: {weights}",
        f"- **Ensemble**{shape}: {' -> '.join(r['step'] for r in result['steps'])}; networks: {nets}, "
        f"{model.cpu_threads} threads per instance.",
        f"- **Requests**: {result['request']} (payloads from the contract: benchmarks/payloads.py).",
        "",
        "## Ensemble overhead (Triton statistics, one request at a time)",
        "",
        f"{result['requests']} sequential requests. Per request, from `ModelStatistics`: a step's "
        "compute = compute_input + compute_infer + compute_output; the ensemble's latency = its "
        "`success` time (request in to response out, inside the server).",
        "",
        "| step | compute ms | of which infer ms | queue ms | request ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for r in result["steps"]:
        lines.append(
            f"| {r['step']} | {r['compute_ms']:.2f} | {r['infer_ms']:.2f} | {r['queue_ms']:.3f} | "
            f"{r['request_ms']:.2f} |"
        )
    lines += [
        f"| **sum of steps' compute** | **{result['sum_steps_compute_ms']:.2f}** | | | |",
        f"| **{model.name} ensemble latency** | | | | **{result['ensemble_ms']:.2f}** |",
        "",
        f"**Ratio ensemble / sum of steps: {result['ratio']:.3f}** (target <= {TARGET_RATIO}: {verdict}). "
        f"Client-side round trip: mean {result['client_mean_ms']:.1f} ms, "
        f"p50 {result['client_p50_ms']:.1f} ms "
        "(adds gRPC and tensor (de)serialisation in the client).",
        "",
        f"## Load (Locust, `--tags {model.name}`, one row per request, closed loop)",
        "",
        "| concurrency | requests/s | p50 ms | p95 ms | p99 ms | failures | server CPU (cores) "
        "| other jobs' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in loads:
        lines.append(
            f"| {r['concurrency']} | {r['requests_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['failures']} | {r['server_cores']:.2f} | {r['foreign_cores']:.2f} |"
        )
    steps = [s["step"] for s in result["steps"]]
    lines += [
        "",
        "## Batching each step achieved under that load (Triton statistics: rows per execution)",
        "",
        "| concurrency | " + " | ".join(steps) + " |",
        "|---:|" + "---:|" * len(steps),
    ]
    for r in loads:
        cells = " | ".join(f"{r['rows_per_execution'].get(s, float('nan')):.1f}" for s in steps)
        lines.append(f"| {r['concurrency']} | {cells} |")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=REGISTRY.names(), required=True)
    p.add_argument("--unfused", action="store_true", help="serve a fuse_on_cpu model as its ensemble")
    p.add_argument("--requests", type=int, default=100, help="sequential requests for the overhead")
    p.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=20.0, help="Locust window per concurrency")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="auto", help="auto: trained when present")
    p.add_argument(
        "--cpu-runtime", choices=["auto", *RUNTIMES], default="auto", help="auto: as `ecomgen serve`"
    )
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--wait-quiet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for other jobs' CPU to settle before each measurement",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    model = with_runtime(REGISTRY[opt.model], opt.cpu_runtime)
    if opt.unfused:
        model = dataclasses.replace(model, fuse_on_cpu=False)
    try:
        ensemble_steps(model)
    except ValueError as e:
        print(f"benchmarks.ensemble: {e}", file=sys.stderr)
        return 2
    quiet: Callable[[], float] = wait_until_quiet if opt.wait_quiet else (lambda: 0.0)
    started = time.monotonic()
    info = machine_info()
    weights = resolve_weights(opt.weights, [model])
    loads = []
    with tempfile.TemporaryDirectory(prefix="ecomgen-ensemble-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        export_networks([model], weights, tmp / "onnx")
        repository, runtimes = build_repository(tmp / "repo", [model], tmp / "onnx")
        with (
            triton_server(repository, tmp / "tritonserver.log") as (url, pid),
            CpuSampler({"triton": pid}) as cpu,
        ):
            result = overhead(url, model, opt.requests, quiet)
            steps = ensemble_steps(model)
            for c in opt.concurrency:
                quiet()
                with grpcclient.InferenceServerClient(url) as client:
                    before = model_stats(client)
                summary, code = run_locust(url, model.name, 1, c, opt.seconds, tmp)
                with grpcclient.InferenceServerClient(url) as client:
                    after = model_stats(client)
                batches = {s: rows_per_execution(before, after, s) for s in steps}
                total, window = summary["total"], summary["window"]
                ok = total["requests"] - total["failures"]
                loads.append(
                    {
                        "concurrency": c,
                        "requests_per_s": total["rps"] * ok / total["requests"] if total["requests"] else 0.0,
                        "p50_ms": total["p50_ms"],
                        "p95_ms": total["p95_ms"],
                        "p99_ms": total["p99_ms"],
                        "failures": total["failures"],
                        "server_cores": cpu.cores("triton", window["start"], window["end"]),
                        "foreign_cores": cpu.foreign(window["start"], window["end"]),
                        "exit_code": code,
                        "rows_per_execution": batches,
                    }
                )
    label = weights.label([model])
    text = render(model, opt, info, label, runtimes, result, loads, time.monotonic() - started)
    stem = opt.out / result_stem(model.name + ("-unfused" if opt.unfused else ""), info)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text)
    write_json(
        stem.with_suffix(".json"),
        {
            "command": command_line(),
            "model": model.name,
            "machine": info,
            "weights": label,
            "runtimes": runtimes,
            "overhead": result,
            "load": loads,
        },
    )
    print(text)
    failed = [r for r in loads if r["failures"] or r["exit_code"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
