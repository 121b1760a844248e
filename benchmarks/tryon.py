"""tryon on the embedded Triton: ensemble overhead from Triton's statistics, and load.

1. **Overhead.** Requests one at a time (no batching, no queueing), then Triton's own
   statistics: the ensemble's average request latency against the sum of its steps'
   compute times (compute_input + compute_infer + compute_output per request). The target
   is a ratio <= 1.15.
2. **Load.** Locust's ``tryon`` scenario (VITON fixture pairs) at a few concurrencies:
   pairs/s and latency percentiles.

    python -m benchmarks.tryon                 # ~3 min
    python -m benchmarks.tryon --requests 20 --concurrency 1 --seconds 5 --out /tmp/b   # smoke
"""

from __future__ import annotations

import argparse
import shutil
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
    CpuSampler,
    command_line,
    machine_info,
    machine_line,
    result_stem,
    today,
    triton_server,
    tryon_pairs,
    wait_until_quiet,
    write_json,
)
from benchmarks.compare import run_locust
from ecomgen_client.specs import TRYON


def build_tryon_repository(root: Path) -> Path:
    """A cpu repository holding only the try-on models, exported from the shipped checkpoints."""
    from export.onnx import export_ensemble
    from export.repository import write_repository

    write_repository(root, "cpu")
    keep = (
        {TRYON.name, TRYON.bytes_model}
        | {f"{TRYON.name}_{s}" for s in ("pre", "post", "decode", "encode")}
        | {n.name for n in TRYON.networks}
    )
    for model in (root / "cpu").iterdir():
        if model.name not in keep:
            shutil.rmtree(model)
    export_ensemble(TRYON, root)
    return root / "cpu"


def model_stats(client: grpcclient.InferenceServerClient) -> dict[str, dict[str, tuple[int, int]]]:
    """model -> {stat: (count, ns)} for the try-on models."""
    out = {}
    for s in client.get_inference_statistics("").model_stats:
        i = s.inference_stats
        out[s.name] = {
            k: (int(getattr(i, k).count), int(getattr(i, k).ns))
            for k in ("success", "queue", "compute_input", "compute_infer", "compute_output")
        }
        out[s.name]["executions"] = (int(s.execution_count), 0)
    return out


def per_request_ms(before: dict[str, Any], after: dict[str, Any], model: str, key: str) -> float:
    c = after[model][key][0] - before[model][key][0]
    ns = after[model][key][1] - before[model][key][1]
    return ns / c / 1e6 if c else float("nan")


def overhead(url: str, requests: int, quiet: Callable[[], float]) -> dict[str, Any]:
    pairs = tryon_pairs(TRYON)
    with grpcclient.InferenceServerClient(url) as client:

        def call(i: int) -> None:
            feeds = pairs[i % len(pairs)]
            inputs = []
            for name, array in feeds.items():
                inputs.append(grpcclient.InferInput(name, list(array.shape), "UINT8"))
                inputs[-1].set_data_from_numpy(array)
            client.infer(TRYON.name, inputs, outputs=[grpcclient.InferRequestedOutput("image")])

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
    steps = [f"{TRYON.name}_pre", *(n.name for n in TRYON.networks), f"{TRYON.name}_post"]
    rows = []
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
    ensemble_ms = per_request_ms(before, after, TRYON.name, "success")
    steps_ms = sum(r["compute_ms"] for r in rows)
    return {
        "requests": requests,
        "steps": rows,
        "ensemble_ms": ensemble_ms,
        "sum_steps_compute_ms": steps_ms,
        "ratio": ensemble_ms / steps_ms,
        "client_p50_ms": float(np.percentile(client_ms, 50)),
        "client_mean_ms": float(np.mean(client_ms)),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=100, help="sequential requests for the overhead")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 8, 16])
    p.add_argument("--seconds", type=float, default=20.0, help="Locust window per concurrency")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument(
        "--wait-quiet",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for other jobs' CPU to settle before each measurement",
    )
    opt = p.parse_args(argv)
    quiet = wait_until_quiet if opt.wait_quiet else (lambda: 0.0)
    started = time.monotonic()
    info = machine_info()
    loads = []
    with tempfile.TemporaryDirectory(prefix="ecomgen-tryon-bench-") as tmp_dir:
        tmp = Path(tmp_dir)
        repository = build_tryon_repository(tmp)
        with (
            triton_server(repository, tmp / "tritonserver.log") as (url, pid),
            CpuSampler({"triton": pid}) as cpu,
        ):
            result = overhead(url, opt.requests, quiet)
            for c in opt.concurrency:
                quiet()
                summary, code = run_locust(url, "tryon", c, opt.seconds, tmp)
                total, window = summary["total"], summary["window"]
                ok = total["requests"] - total["failures"]
                loads.append(
                    {
                        "concurrency": c,
                        "pairs_per_s": total["rps"] * ok / total["requests"] if total["requests"] else 0.0,
                        "p50_ms": total["p50_ms"],
                        "p95_ms": total["p95_ms"],
                        "p99_ms": total["p99_ms"],
                        "failures": total["failures"],
                        "server_cores": cpu.cores("triton", window["start"], window["end"]),
                        "foreign_cores": cpu.foreign(window["start"], window["end"]),
                        "exit_code": code,
                    }
                )
    wall = time.monotonic() - started
    verdict = "meets" if result["ratio"] <= 1.15 else "misses"
    lines = [
        f"# tryon on the embedded Triton ({info['model']}, {info['cpus']} CPUs)",
        "",
        f"- **Date**: {today()}",
        f"- **Command**: `{command_line()}` (took {wall / 60:.1f} min)",
        f"- **Machine**: {machine_line(info)}",
        f"- **{GPU_LINE.split(':', 1)[0]}**:{GPU_LINE.split(':', 1)[1]}",
        "- **Weights**: checkpoints/tryon_*.safetensors (VITON-trained, research only); networks on "
        f"{TRYON.cpu_runtime} with {TRYON.cpu_threads} threads per instance.",
        "- **Inputs**: the 4 VITON fixture pairs (256x192 JPEGs), uint8 tensors in, `image` out.",
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
        f"| **tryon ensemble latency** | | | | **{result['ensemble_ms']:.2f}** |",
        "",
        f"**Ratio ensemble / sum of steps: {result['ratio']:.3f}** (target <= 1.15: {verdict}). "
        f"Client-side round trip: mean {result['client_mean_ms']:.1f} ms, "
        f"p50 {result['client_p50_ms']:.1f} ms "
        "(adds gRPC and tensor (de)serialisation in the client).",
        "",
        "## Load (Locust `tryon` scenario, closed loop)",
        "",
        "| concurrency | pairs/s | p50 ms | p95 ms | p99 ms | failures | server CPU (cores) "
        "| other jobs' CPU |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in loads:
        lines.append(
            f"| {r['concurrency']} | {r['pairs_per_s']:.1f} | {r['p50_ms']:.0f} | {r['p95_ms']:.0f} | "
            f"{r['p99_ms']:.0f} | {r['failures']} | {r['server_cores']:.2f} | {r['foreign_cores']:.2f} |"
        )
    stem = opt.out / result_stem("tryon", info)
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    write_json(
        stem.with_suffix(".json"),
        {"command": command_line(), "machine": info, "overhead": result, "load": loads},
    )
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
