"""Triton vs. the eager-PyTorch baseline, under the same Locust load, in one command.

Starts both servers (same weights, same images), then runs Locust headless at
each concurrency, interleaving the servers (triton c=1, baseline c=1, triton c=8,
...) so slow drifts of the machine hit both alike. Optionally cross-checks every
point with perf_analyzer. Writes ``benchmarks/results/<date>-<machine>.md`` (+ a
JSON twin and two PNG plots).

    python -m benchmarks.compare                          # 1, 8, 32, 64 users; both scenarios
    python -m benchmarks.compare --concurrency 1 32 --duration 10 --no-perf-analyzer
    python -m benchmarks.compare --smoke --out /tmp/bench # seconds long, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from benchmarks import perf_analyzer
from benchmarks.baseline_server import default_threads
from benchmarks.common import (
    GPU_LINE,
    LOCUSTFILE,
    REPO_ROOT,
    RESULTS_DIR,
    CpuSampler,
    baseline_server,
    build_repository,
    command_line,
    export_onnx,
    fetch_images,
    load_generator,
    machine_info,
    machine_line,
    machine_slug,
    newest,
    resolve_weights,
    result_stem,
    today,
    triton_server,
    wait_until_quiet,
    write_json,
)
from ecomgen_client.specs import PRODUCT_GAN, DynamicBatching, ModelSpec

SCENARIOS = {"single": 1, "batch16": 16}  # Locust tag -> images per request
SERVERS = ("triton", "baseline")
GAP_THRESHOLD = 0.15


@dataclass
class Point:
    """One load level on one server, measured by one load generator."""

    tool: str  # "locust" or "perf_analyzer"
    server: str
    scenario: str
    concurrency: int
    images_per_request: int
    images_per_s: float
    requests: int = 0
    failures: int = 0
    p50_ms: float = math.nan
    p95_ms: float = math.nan
    p99_ms: float = math.nan
    avg_ms: float = math.nan
    client_cores: float = math.nan
    server_cores: float = math.nan
    idle_server_cores: float = math.nan  # the other server, which should be idle
    foreign_cores: float = math.nan  # other jobs on the (shared) machine
    exit_code: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    windows: list[float] = field(default_factory=list)  # perf_analyzer's per-window images/s


def run_locust(
    url: str, scenario: str, concurrency: int, duration_s: float, workdir: Path, budget_ms: float = 0.0
) -> tuple[dict[str, Any], int]:
    """One headless Locust run; returns its summary (see locustfile) and exit code."""
    prefix = workdir / f"{scenario}-c{concurrency}-{time.monotonic_ns()}"
    summary = prefix.with_suffix(".json")
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--only-summary",
        "--reset-stats",  # measure after all users are spawned
        "--loglevel",
        "WARNING",
        "-u",
        str(concurrency),
        "-r",
        str(concurrency),  # spawn everyone within the first second
        "-t",
        f"{math.ceil(duration_s) + 1}s",
        "--host",
        url,
        "--tags",
        scenario,
        "--csv",
        str(prefix),
        "--summary-json",
        str(summary),
        "--p99-budget-ms",
        str(budget_ms),
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=duration_s + 180)
    if not summary.exists():
        raise RuntimeError(f"locust wrote no summary (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(summary.read_text()), proc.returncode


def locust_point(
    server: str,
    scenario: str,
    concurrency: int,
    summary: dict[str, Any],
    code: int,
    cpu: CpuSampler,
) -> Point:
    total, window = summary["total"], summary["window"]
    n = SCENARIOS[scenario]
    ok = total["requests"] - total["failures"]
    rps_ok = total["rps"] * ok / total["requests"] if total["requests"] else 0.0
    other = next(s for s in SERVERS if s != server)
    start, end = window.get("start", 0.0), window.get("end", 0.0)
    return Point(
        tool="locust",
        server=server,
        scenario=scenario,
        concurrency=concurrency,
        images_per_request=n,
        images_per_s=rps_ok * n,
        requests=total["requests"],
        failures=total["failures"],
        p50_ms=total["p50_ms"],
        p95_ms=total["p95_ms"],
        p99_ms=total["p99_ms"],
        avg_ms=total["avg_ms"],
        client_cores=window.get("client_cores") or math.nan,
        server_cores=cpu.cores(server, start, end),
        idle_server_cores=cpu.cores(other, start, end),
        foreign_cores=cpu.foreign(start, end),
        exit_code=code,
        errors=summary.get("errors", {}),
    )


PARITY_MIN_PSNR_DB = 40.0  # the same tolerance as the runtime decision (benchmarks/roofline.py)


def parity(triton_url: str, baseline_url: str) -> tuple[int, float]:
    """Max uint8 difference and PSNR between both servers on the same (class, seed) requests."""
    classes, seeds = list(range(10)) * 2, [7 * i + 1 for i in range(20)]
    a = fetch_images(triton_url, classes, seeds).astype(np.float64)
    b = fetch_images(baseline_url, classes, seeds).astype(np.float64)
    mse = float(np.mean((a - b) ** 2))
    return int(np.abs(a - b).max()), (math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse))


def warm_up(url: str) -> None:
    for n in (1, 16, 64):
        fetch_images(url, [i % 10 for i in range(n)], list(range(n)))


# --- report ----------------------------------------------------------------------


def _f(x: float, digits: int = 1) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:,.{digits}f}"


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _find(points: list[Point], tool: str, server: str, scenario: str, c: int) -> Point | None:
    for p in points:
        if (p.tool, p.server, p.scenario, p.concurrency) == (tool, server, scenario, c):
            return p
    return None


def plot(points: list[Point], scenarios: list[str], out_stem: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"triton": "tab:green", "baseline": "tab:red"}
    paths = []
    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        for server in SERVERS:
            pts = sorted(
                (p for p in points if p.tool == "locust" and p.server == server and p.scenario == scenario),
                key=lambda p: p.concurrency,
            )
            ax.plot(
                [p.concurrency for p in pts],
                [p.images_per_s for p in pts],
                "o-",
                color=colors[server],
                label=server,
            )
            pa = sorted(
                (
                    p
                    for p in points
                    if p.tool == "perf_analyzer" and p.server == server and p.scenario == scenario
                ),
                key=lambda p: p.concurrency,
            )
            if pa:
                ax.plot(
                    [p.concurrency for p in pa],
                    [p.images_per_s for p in pa],
                    "x--",
                    color=colors[server],
                    alpha=0.6,
                    label=f"{server} (perf_analyzer)",
                )
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrency (closed-loop clients)")
        ax.set_ylabel("images / s")
        ax.set_title(f"product_gan [{scenario}]: throughput")
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.tight_layout()
    paths.append(out_stem.with_name(out_stem.name + "-throughput.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
    for ax, scenario in zip(axes[0], scenarios, strict=True):
        for server in SERVERS:
            pts = sorted(
                (p for p in points if p.tool == "locust" and p.server == server and p.scenario == scenario),
                key=lambda p: p.concurrency,
            )
            x = [p.images_per_s for p in pts]
            ax.plot(x, [p.p99_ms for p in pts], "o-", color=colors[server], label=f"{server} p99")
            ax.plot(x, [p.p50_ms for p in pts], "s:", color=colors[server], alpha=0.6, label=f"{server} p50")
            for p in pts:
                ax.annotate(f"c={p.concurrency}", (p.images_per_s, p.p99_ms), fontsize=7, alpha=0.7)
        ax.set_yscale("log")
        ax.set_xlabel("images / s")
        ax.set_ylabel("latency per request (ms)")
        ax.set_title(f"product_gan [{scenario}]: latency vs throughput")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    paths.append(out_stem.with_name(out_stem.name + "-latency.png"))
    fig.savefig(paths[-1], dpi=110)
    plt.close(fig)
    return paths


def efficiency_section(points: list[Point], roofline: dict[str, Any] | None, path: Path | None) -> list[str]:
    if roofline is None:
        return [
            "",
            "## Distance to the limit",
            "",
            "No roofline results found: run `python -m benchmarks.roofline`.",
        ]
    from benchmarks.roofline import SERVED

    ceiling_row = dict(roofline["ceiling"])
    if ceiling_row.get("runtime") != SERVED:
        # The sweep ran another configuration; the runtimes table measured the served one.
        row = next((r for r in roofline.get("runtimes", []) if r["runtime"] == SERVED), None)
        if row is not None and row["images_per_s"]:
            batch, ips = max(row["images_per_s"].items(), key=lambda kv: kv[1])
            ceiling_row.update(images_per_s=ips, batch=batch, runtime=SERVED)
    roofline = {**roofline, "ceiling": ceiling_row}
    ceiling = ceiling_row["images_per_s"]
    flops = roofline["flops_per_image"]
    # The roof of the served precision: bf16 serving is measured against the bf16 GEMM peak.
    precision, peak_gflops = "fp32", roofline["peak_fp32_gflops"]
    bf16 = [g["gflops"] for g in roofline.get("gemm", []) if g["what"].startswith("bf16")]
    if "bf16" in SERVED and bf16:
        precision, peak_gflops = "bf16", max(bf16)
    peak = peak_gflops * 1e9
    lines = [
        "",
        "## Distance to the limit",
        "",
        f"From [{path.name if path else 'roofline'}]({path.with_suffix('.md').name if path else ''}): "
        f"offline ceiling of {roofline['ceiling'].get('runtime', 'the served runtime')} "
        f"{_f(ceiling)} images/s (batch {roofline['ceiling']['batch']}, "
        f"{roofline['ceiling']['threads']} threads), {flops / 1e6:,.1f} MFLOP per image, "
        f"measured peak {precision} GEMM {peak_gflops:,.1f} GFLOP/s (the served precision's roof).",
        "",
        "| scenario | concurrency | Triton images/s | serving efficiency (served / ceiling) | "
        "compute efficiency (achieved FLOP/s / peak) |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in sorted((p for p in points if p.tool == "locust" and p.server == "triton"), key=_key):
        lines.append(
            f"| {p.scenario} | {p.concurrency} | {_f(p.images_per_s)} | {p.images_per_s / ceiling:.0%} | "
            f"{p.images_per_s * flops / peak:.1%} |"
        )
    lines.append(
        f"| (offline ceiling) | – | {_f(ceiling)} | 100% | {ceiling * flops / peak:.1%} |",
    )
    return lines


def _key(p: Point) -> tuple[int, int]:
    return (list(SCENARIOS).index(p.scenario), p.concurrency)


def report(
    points: list[Point],
    *,
    scenarios: list[str],
    concurrencies: list[int],
    duration_s: float,
    weights_label: str,
    info: dict[str, Any],
    parity_diff: int,
    parity_psnr: float,
    baseline_threads: int,
    spec: ModelSpec,
    plots: list[Path],
    roofline: dict[str, Any] | None,
    roofline_path: Path | None,
    wall_s: float,
    quiet_timeout_s: float,
) -> str:
    # Not `import locust`: that monkey-patches this (threaded) process for gevent and deadlocks it.
    locust_version = importlib.metadata.version("locust")
    b = spec.batching
    lines = [
        f"# product_gan serving: Triton vs. eager-PyTorch baseline ({info['model']}, {info['cpus']} CPUs)",
        "",
        f"- **Date**: {today()}",
        f"- **Command**: `{command_line()}` (took {wall_s / 60:.1f} min)",
        f"- **Machine**: {machine_line(info)}",
        f"- **Weights**: {weights_label}",
        f"- **{GPU_LINE.split(':', 1)[0]}**:{GPU_LINE.split(':', 1)[1]}",
        f"- **Triton** 2.51 (nvidia-pytriton 0.5.0), cpu target: Python backend + {spec.cpu_runtime} "
        "(static power-of-two shapes), "
        f"{spec.cpu_instances} instance(s) x {spec.cpu_threads} intra-op threads, dynamic batching "
        f"preferred {list(b.preferred_batch_sizes)}, max_queue_delay {b.max_queue_delay_us} µs, "
        f"max_batch_size {spec.max_batch_size}.",
        f"- **Baseline**: `benchmarks/baseline_server.py`, the same generator in eager PyTorch behind a "
        f"grpcio KServe v2 server, one request at a time (1 worker thread + lock), torch threads "
        f"{baseline_threads} (= Triton's instances x intra-op threads), inter-op threads 1.",
        f"- **Same images**: on 20 (class, seed) pairs the servers differ by at most {parity_diff} "
        f"uint8 levels, PSNR {parity_psnr:.1f} dB (Triton serves {spec.cpu_runtime} "
        f"{spec.cpu_precision}, the baseline PyTorch fp32; the gate is {PARITY_MIN_PSNR_DB:.0f} dB).",
        f"- **Load**: Locust {locust_version} over gRPC (tritonclient), closed loop (no wait time, "
        f"users = concurrency), {duration_s:g} s measured per point after spawning, runs interleaved "
        f"triton/baseline per concurrency; both servers stay up, the idle one's CPU is shown.",
        "- **Shared machine**: "
        + (
            f"each point starts once other jobs use < 0.3 cores for 3 s (waiting at most "
            f"{quiet_timeout_s:g} s); their CPU during the point is the 'other jobs' CPU' column."
            if quiet_timeout_s > 0
            else "no waiting for other jobs (smoke); their CPU is the 'other jobs' CPU' column."
        ),
    ]
    for scenario in scenarios:
        n = SCENARIOS[scenario]
        lines += [
            "",
            f"## {scenario}: {n} image{'s' if n > 1 else ''} per request",
            "",
            "| concurrency | server | images/s | p50 ms | p95 ms | p99 ms | requests | errors | "
            "client CPU (cores) | server CPU (cores) | idle server CPU | other jobs' CPU |",
            "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for c in concurrencies:
            for server in SERVERS:
                p = _find(points, "locust", server, scenario, c)
                if p is None:
                    continue
                lines.append(
                    f"| {c} | {server} | {_f(p.images_per_s)} | {_f(p.p50_ms, 0)} | {_f(p.p95_ms, 0)} | "
                    f"{_f(p.p99_ms, 0)} | {p.requests:,} | {p.failures} | {_f(p.client_cores, 2)} | "
                    f"{_f(p.server_cores, 2)} | {_f(p.idle_server_cores, 2)} | {_f(p.foreign_cores, 2)} |"
                )
    lines += [
        "",
        "## Ratios (Triton / baseline, Locust)",
        "",
        "| scenario | concurrency | images/s ratio | p99 ratio (lower = Triton faster) |",
        "|---|---:|---:|---:|",
    ]
    for scenario in scenarios:
        for c in concurrencies:
            t, bl = (
                _find(points, "locust", "triton", scenario, c),
                _find(points, "locust", "baseline", scenario, c),
            )
            if t and bl:
                lines.append(
                    f"| {scenario} | {c} | {_f(_ratio(t.images_per_s, bl.images_per_s), 2)}x | "
                    f"{_f(_ratio(t.p99_ms, bl.p99_ms), 2)}x |"
                )
    errors = {k: v for p in points for k, v in p.errors.items()}
    if errors:
        lines += ["", "Errors seen:", ""] + [f"- {v} x `{k[:300]}`" for k, v in errors.items()]

    pa_points = [p for p in points if p.tool == "perf_analyzer"]
    if pa_points:
        lines += [
            "",
            "## Cross-check with perf_analyzer (tritonclient 2.41.0, C++ client)",
            "",
            "| scenario | concurrency | server | Locust images/s | perf_analyzer images/s | gap | "
            "Locust p99 ms | PA p99 ms | Locust client cores | PA client cores | other jobs' CPU (L / PA) |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        big = []
        for pa in sorted(pa_points, key=lambda p: (*_key(p), SERVERS.index(p.server))):
            lo = _find(points, "locust", pa.server, pa.scenario, pa.concurrency)
            if lo is None:
                continue
            gap = _ratio(pa.images_per_s - lo.images_per_s, pa.images_per_s)
            if abs(gap) > GAP_THRESHOLD:
                big.append((pa, lo, gap))
            lines.append(
                f"| {pa.scenario} | {pa.concurrency} | {pa.server} | {_f(lo.images_per_s)} | "
                f"{_f(pa.images_per_s)} | {gap:+.0%} | {_f(lo.p99_ms, 0)} | {_f(pa.p99_ms, 0)} | "
                f"{_f(lo.client_cores, 2)} | {_f(pa.client_cores, 2)} | "
                f"{_f(lo.foreign_cores, 2)} / {_f(pa.foreign_cores, 2)} |"
            )
        lines += ["", "gap = (perf_analyzer - Locust) / perf_analyzer."]
        if big:
            lines += [
                "",
                f"Gaps above {GAP_THRESHOLD:.0%} (facts for the explanation in benchmarks/README.md):",
                "",
            ]
            for pa, lo, gap in big:
                lines.append(
                    f"- {pa.scenario} c={pa.concurrency} {pa.server}: {gap:+.0%}; Locust's client used "
                    f"{_f(lo.client_cores, 2)} cores and the server {_f(lo.server_cores, 2)} of "
                    f"{info['cpus']}, perf_analyzer's client {_f(pa.client_cores, 2)} cores and the server "
                    f"{_f(pa.server_cores, 2)}."
                )
        else:
            lines += ["", f"All Locust and perf_analyzer throughputs agree within {GAP_THRESHOLD:.0%}."]

    lines += efficiency_section(points, roofline, roofline_path)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


# --- main --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per point")
    p.add_argument("--scenarios", nargs="+", choices=sorted(SCENARIOS), default=list(SCENARIOS))
    p.add_argument("--out", type=Path, default=RESULTS_DIR, help="results directory")
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the trained checkpoint if present")
    p.add_argument("--random-weights", action="store_true", help="random Generator(ngf=48) even if trained")
    p.add_argument("--baseline-threads", type=int, default=default_threads())
    p.add_argument("--perf-analyzer", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--pa-measurement-ms", type=int, default=5000)
    p.add_argument("--roofline", type=Path, default=None, help="roofline JSON (default: newest in results)")
    p.add_argument(
        "--quiet-timeout", type=float, default=300.0, help="max seconds to wait for other jobs to go quiet"
    )
    p.add_argument("--smoke", action="store_true", help="one concurrency, 3 s, no perf_analyzer, no waiting")
    g = p.add_argument_group("Triton config overrides (default: PRODUCT_GAN in specs.py)")
    g.add_argument("--cpu-instances", type=int, default=PRODUCT_GAN.cpu_instances)
    g.add_argument("--cpu-threads", type=int, default=PRODUCT_GAN.cpu_threads)
    g.add_argument("--max-queue-delay-us", type=int, default=PRODUCT_GAN.batching.max_queue_delay_us)
    g.add_argument(
        "--preferred-batch-sizes",
        type=int,
        nargs="*",
        default=list(PRODUCT_GAN.batching.preferred_batch_sizes),
    )
    p.add_argument("--label", default="", help="suffix of the results file names, e.g. 'tuned'")
    opt = p.parse_args(argv)
    spec = dataclasses.replace(
        PRODUCT_GAN,
        cpu_instances=opt.cpu_instances,
        cpu_threads=opt.cpu_threads,
        batching=DynamicBatching(tuple(opt.preferred_batch_sizes), opt.max_queue_delay_us),
    )
    if opt.smoke:
        opt.concurrency, opt.duration, opt.scenarios, opt.perf_analyzer = [4], 3.0, ["single"], False
        opt.quiet_timeout = 0.0

    started = time.monotonic()
    info = machine_info()
    weights = resolve_weights(opt.checkpoint, random=opt.random_weights)
    opt.out.mkdir(parents=True, exist_ok=True)
    stem = opt.out / result_stem("-".join(filter(None, ["smoke" if opt.smoke else "", opt.label])), info)
    points: list[Point] = []
    with tempfile.TemporaryDirectory(prefix="ecomgen-compare-") as tmp_dir:
        tmp = Path(tmp_dir)
        onnx_file = export_onnx(load_generator(weights), tmp / "model.onnx")
        repository = build_repository(tmp / "repo", onnx_file, spec)
        with (
            triton_server(repository, tmp / "tritonserver.log") as (triton_url, triton_pid),
            baseline_server(weights, opt.baseline_threads, tmp / "baseline.log") as (
                baseline_url,
                baseline_pid,
            ),
            CpuSampler({"triton": triton_pid, "baseline": baseline_pid}) as cpu,
        ):
            urls = {"triton": triton_url, "baseline": baseline_url}
            parity_diff, parity_psnr = parity(triton_url, baseline_url)
            for url in urls.values():
                warm_up(url)
            plan = [(s, c, srv) for s in opt.scenarios for c in opt.concurrency for srv in SERVERS]
            for scenario, c, server in tqdm(plan, desc="locust", unit="run"):
                wait_until_quiet(timeout_s=opt.quiet_timeout)  # shared machine: start each point when quiet
                summary, code = run_locust(urls[server], scenario, c, opt.duration, tmp)
                points.append(locust_point(server, scenario, c, summary, code, cpu))
            if opt.perf_analyzer:
                for scenario, c, server in tqdm(plan, desc="perf_analyzer", unit="run"):
                    wait_until_quiet(timeout_s=opt.quiet_timeout)
                    t0 = time.time()
                    r = perf_analyzer.run(
                        urls[server], c, SCENARIOS[scenario], measurement_ms=opt.pa_measurement_ms
                    )
                    other = next(s for s in SERVERS if s != server)
                    t1 = time.time()
                    points.append(
                        Point(
                            tool="perf_analyzer",
                            server=server,
                            scenario=scenario,
                            concurrency=c,
                            images_per_request=SCENARIOS[scenario],
                            images_per_s=r.images_per_s,
                            p50_ms=r.p50_ms,
                            p95_ms=r.p95_ms,
                            p99_ms=r.p99_ms,
                            avg_ms=r.avg_ms,
                            client_cores=r.client_cores,
                            server_cores=cpu.cores(server, t0, t1),
                            idle_server_cores=cpu.cores(other, t0, t1),
                            foreign_cores=cpu.foreign(t0, t1),
                            windows=r.window_images_per_s,
                        )
                    )

    roofline_path = opt.roofline or newest(f"*-{machine_slug(info)}-roofline.json", RESULTS_DIR)
    if opt.smoke:
        roofline_path = opt.roofline
    roofline = json.loads(roofline_path.read_text()) if roofline_path and roofline_path.exists() else None
    plots = plot(points, opt.scenarios, stem)
    md = report(
        points,
        scenarios=opt.scenarios,
        concurrencies=opt.concurrency,
        duration_s=opt.duration,
        weights_label=weights.label,
        info=info,
        parity_diff=parity_diff,
        parity_psnr=parity_psnr,
        baseline_threads=opt.baseline_threads,
        spec=spec,
        plots=plots,
        roofline=roofline,
        roofline_path=roofline_path,
        wall_s=time.monotonic() - started,
        quiet_timeout_s=opt.quiet_timeout,
    )
    stem.with_suffix(".md").write_text(md)
    write_json(
        stem.with_suffix(".json"),
        {
            "command": command_line(),
            "machine": info,
            "weights": weights.label,
            "parity_max_uint8_diff": parity_diff,
            "parity_psnr_db": parity_psnr,
            "points": [asdict(p) for p in points],
        },
    )
    print(f"wrote {stem.with_suffix('.md')}")
    failed = [p for p in points if p.tool == "locust" and (p.failures or p.exit_code)]
    for f in failed:
        print(
            f"{f.server} {f.scenario} c={f.concurrency}: {f.failures} failures, exit {f.exit_code}",
            file=sys.stderr,
        )
    return 1 if failed or parity_psnr < PARITY_MIN_PSNR_DB else 0


if __name__ == "__main__":
    sys.exit(main())
