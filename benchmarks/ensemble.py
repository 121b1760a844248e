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
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from benchmarks import harness, report
from benchmarks.compare import run_locust
from benchmarks.payloads import PayloadMaker, describe, infer_inputs
from benchmarks.report import table
from ecomgen.launcher import Sampler
from ecomgen.registry import REGISTRY
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


STEP_COLUMNS = ("step", "compute ms", "of which infer ms", "queue ms", "request ms")
LOAD_COLUMNS = (
    "concurrency", "requests/s", "p50 ms", "p95 ms", "p99 ms", "failures", "server CPU (cores)",
    "other jobs' CPU",
)  # fmt: skip


def _step_row(r: dict[str, Any]) -> tuple[str, ...]:
    ms = (f"{r[k]:.3f}" if k == "queue_ms" else f"{r[k]:.2f}" for k in ("compute_ms", "infer_ms", "queue_ms"))
    return (r["step"], *ms, f"{r['request_ms']:.2f}")


def _load_row(r: dict[str, Any]) -> tuple[object, ...]:
    return (
        r["concurrency"], f"{r['requests_per_s']:.1f}", f"{r['p50_ms']:.0f}", f"{r['p95_ms']:.0f}",
        f"{r['p99_ms']:.0f}", r["failures"], f"{r['server_cores']:.2f}", f"{r['foreign_cores']:.2f}",
    )  # fmt: skip


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
        *report.run_lines(info, wall_s),
        report.bullet(report.GPU_LINE),
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
        *table(STEP_COLUMNS, [_step_row(r) for r in result["steps"]], "lrrrr"),
    ]
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
        *table(LOAD_COLUMNS, [_load_row(r) for r in loads], "r" * len(LOAD_COLUMNS)),
    ]
    steps = [s["step"] for s in result["steps"]]
    batching = [
        (r["concurrency"], *(f"{r['rows_per_execution'].get(s, float('nan')):.1f}" for s in steps))
        for r in loads
    ]
    lines += [
        "",
        "## Batching each step achieved under that load (Triton statistics: rows per execution)",
        "",
        *table(("concurrency", *steps), batching, "r" * (1 + len(steps))),
    ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=REGISTRY.names(), required=True)
    p.add_argument("--unfused", action="store_true", help="serve a fuse_on_cpu model as its ensemble")
    p.add_argument("--requests", type=int, default=100, help="sequential requests for the overhead")
    p.add_argument("--concurrency", type=int, nargs="*", default=[1, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=20.0, help="Locust window per concurrency")
    harness.add_arguments(p)
    return p.parse_args(argv)


def load(
    url: str, model: ServedModel, opt: argparse.Namespace, h: harness.Harness, cpu: Sampler
) -> list[Any]:
    """Locust at each concurrency: requests/s, latency, CPU and the batching every step achieved."""
    steps = ensemble_steps(model)
    loads = []
    for c in opt.concurrency:
        h.quiet()
        with grpcclient.InferenceServerClient(url) as client:
            before = model_stats(client)
        summary, code = run_locust(url, model.name, 1, c, opt.seconds, h.tmp)
        with grpcclient.InferenceServerClient(url) as client:
            after = model_stats(client)
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
                "rows_per_execution": {s: rows_per_execution(before, after, s) for s in steps},
            }
        )
    return loads


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    model = harness.with_runtime(REGISTRY[opt.model], opt.cpu_runtime)
    if opt.unfused:
        model = dataclasses.replace(model, fuse_on_cpu=False)
    try:
        ensemble_steps(model)
    except ValueError as e:
        print(f"benchmarks.ensemble: {e}", file=sys.stderr)
        return 2
    started = time.monotonic()
    with (
        harness.Harness([model], opt.weights, quiet=opt.wait_quiet, prefix="ecomgen-ensemble-bench-") as h,
        Sampler({"triton": h.pid}, interval_s=0.25, memory=False) as cpu,
    ):
        result = overhead(h.url, model, opt.requests, h.quiet)
        loads = load(h.url, model, opt, h, cpu)
    info, label = h.machine, h.weights_label
    text = render(model, opt, info, label, h.runtimes, result, loads, time.monotonic() - started)
    stem = opt.out / report.result_stem(model.name + ("-unfused" if opt.unfused else ""), info)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text(text)
    report.write_json(
        stem.with_suffix(".json"),
        {
            "command": report.command_line(),
            "model": model.name,
            "machine": info,
            "weights": label,
            "runtimes": h.runtimes,
            "overhead": result,
            "load": loads,
        },
    )
    print(text)
    failed = [r for r in loads if r["failures"] or r["exit_code"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
