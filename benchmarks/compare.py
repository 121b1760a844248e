"""Triton vs. the eager-PyTorch baseline, under the same Locust load, for any served model.

Starts both servers for ``--model`` (same weights, same images), then runs Locust
headless at each concurrency, interleaving the servers (triton c=1, baseline c=1,
triton c=8, ...) so slow drifts of the machine hit both alike. Optionally cross-checks
every point with perf_analyzer. Writes ``benchmarks/results/<date>-<machine>.md`` for
product_gan, ``<date>-<machine>-<model>-compare.md`` for another model (+ a JSON twin and two
PNG plots). Scenarios are request sizes: ``single`` (1 row per request) and
``batch16`` (16 rows, an ad-creative batch), capped at the model's max_batch_size.

    python -m benchmarks.compare                          # product_gan, 1, 8, 32, 64 users, 1 and 16 rows
    python -m benchmarks.compare --model tryon --rows 1 --concurrency 1 8 --no-perf-analyzer
    python -m benchmarks.compare --smoke --out /tmp/bench # seconds long, for CI
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.metadata
import io
import json
import math
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
from tqdm import tqdm

from benchmarks import harness, perf_analyzer, report
from benchmarks.baseline_server import default_threads
from benchmarks.payloads import fetch, payload
from benchmarks.report import fmt, table
from ecomgen.launcher import Sampler
from ecomgen.numerics import PARITY_MIN_PSNR_DB, psnr_uint8
from ecomgen.registry import REGISTRY
from ecomgen.spec import Batching, ServedModel
from training.paths import REPO_ROOT

SERVERS = ("triton", "baseline")
GAP_THRESHOLD = 0.15


def scenario_name(rows: int) -> str:
    """``single`` (1 row per request) or ``batch<N>`` (the locustfile names its rows the same)."""
    return "single" if rows == 1 else f"batch{rows}"


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
    url: str,
    model: str,
    rows: int,
    concurrency: int,
    duration_s: float,
    workdir: Path,
    budget_ms: float = 0.0,
    extra: tuple[str, ...] = (),
) -> tuple[dict[str, Any], int]:
    """One headless Locust run of ``model``, ``rows`` per request; its summary (see locustfile), exit code."""
    prefix = workdir / f"{model}-r{rows}-c{concurrency}-{time.monotonic_ns()}"
    summary = prefix.with_suffix(".json")
    cmd = [
        sys.executable,
        "-m",
        "locust",
        "-f",
        str(harness.LOCUSTFILE),
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
        model,
        "--rows",
        str(rows),
        "--csv",
        str(prefix),
        "--summary-json",
        str(summary),
        "--p99-budget-ms",
        str(budget_ms),
        *extra,
    ]
    proc = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True, timeout=duration_s + 180)
    if not summary.exists():
        raise RuntimeError(f"locust wrote no summary (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(summary.read_text()), proc.returncode


class CpuFields(TypedDict):
    server_cores: float
    idle_server_cores: float
    foreign_cores: float


def cpu_fields(cpu: Sampler, server: str, start: float, end: float) -> CpuFields:
    """Average cores of the measured server, of the other (idle) one and of other jobs over a window."""
    other = next(s for s in SERVERS if s != server)
    return {
        "server_cores": cpu.cores(server, start, end),
        "idle_server_cores": cpu.cores(other, start, end),
        "foreign_cores": cpu.foreign(start, end),
    }


def locust_point(
    server: str,
    rows: int,
    concurrency: int,
    summary: dict[str, Any],
    code: int,
    cpu: Sampler,
) -> Point:
    total, window = summary["total"], summary["window"]
    ok = total["requests"] - total["failures"]
    rps_ok = total["rps"] * ok / total["requests"] if total["requests"] else 0.0
    return Point(
        tool="locust",
        server=server,
        scenario=scenario_name(rows),
        concurrency=concurrency,
        images_per_request=rows,
        images_per_s=rps_ok * rows,
        requests=total["requests"],
        failures=total["failures"],
        p50_ms=total["p50_ms"],
        p95_ms=total["p95_ms"],
        p99_ms=total["p99_ms"],
        avg_ms=total["avg_ms"],
        client_cores=window.get("client_cores") or math.nan,
        exit_code=code,
        errors=summary.get("errors", {}),
        **cpu_fields(cpu, server, window.get("start", 0.0), window.get("end", 0.0)),
    )


def as_uint8_images(array: np.ndarray) -> np.ndarray | None:
    """A uint8 output as is; BYTES outputs decoded as images (PNG/JPEG); None for anything else."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.object_:
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


def parity(model: ServedModel, triton_url: str, baseline_url: str) -> tuple[int, float, int]:
    """Max uint8 difference, lowest PSNR and rows compared, both servers on the same payloads."""
    rows = min(20, model.contract.max_batch_size) if model.contract.batched else 1
    worst_diff, worst_psnr, compared = 0, math.inf, 0
    for index in range(1 if rows >= 16 else 2):  # a few more rows when max_batch_size is small
        p = payload(model.name, rows, index=index)
        diff, psnr = compare_outputs(fetch(triton_url, p), fetch(baseline_url, p))
        worst_diff, worst_psnr, compared = max(worst_diff, diff), min(worst_psnr, psnr), compared + p.rows
    return worst_diff, worst_psnr, compared


def warm_up(url: str, model: ServedModel) -> None:
    top = model.contract.max_batch_size if model.contract.batched else 1
    for rows in sorted({1, min(16, top), top}):
        fetch(url, payload(model.name, rows))


# --- report ----------------------------------------------------------------------


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def _find(points: list[Point], tool: str, server: str, scenario: str, c: int) -> Point | None:
    for p in points:
        if (p.tool, p.server, p.scenario, p.concurrency) == (tool, server, scenario, c):
            return p
    return None


COLOURS = {"triton": "tab:green", "baseline": "tab:red"}


def _series(points: list[Point], tool: str, server: str, scenario: str) -> list[Point]:
    """One load generator's points of one server and scenario, by concurrency."""
    found = (p for p in points if (p.tool, p.server, p.scenario) == (tool, server, scenario))
    return sorted(found, key=lambda p: p.concurrency)


def _throughput(ax: Any, points: list[Point], scenario: str, model: str) -> None:
    for server in SERVERS:
        for tool, style, alpha, label in (
            ("locust", "o-", 1.0, server),
            ("perf_analyzer", "x--", 0.6, f"{server} (perf_analyzer)"),
        ):
            pts = _series(points, tool, server, scenario)
            if pts:
                x, y = [p.concurrency for p in pts], [p.images_per_s for p in pts]
                ax.plot(x, y, style, color=COLOURS[server], alpha=alpha, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (closed-loop clients)")
    ax.set_ylabel("images / s")
    ax.set_title(f"{model} [{scenario}]: throughput")
    ax.grid(True, alpha=0.3)
    ax.legend()


def _latency(ax: Any, points: list[Point], scenario: str, model: str) -> None:
    for server in SERVERS:
        pts = _series(points, "locust", server, scenario)
        x = [p.images_per_s for p in pts]
        ax.plot(x, [p.p99_ms for p in pts], "o-", color=COLOURS[server], label=f"{server} p99")
        ax.plot(x, [p.p50_ms for p in pts], "s:", color=COLOURS[server], alpha=0.6, label=f"{server} p50")
        for p in pts:
            ax.annotate(f"c={p.concurrency}", (p.images_per_s, p.p99_ms), fontsize=7, alpha=0.7)
    ax.set_yscale("log")
    ax.set_xlabel("images / s")
    ax.set_ylabel("latency per request (ms)")
    ax.set_title(f"{model} [{scenario}]: latency vs throughput")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)


def plot(points: list[Point], scenarios: list[str], out_stem: Path, model: str) -> list[Path]:
    """``<stem>-throughput.png`` and ``<stem>-latency.png``, one panel per scenario."""
    plt, paths = report.pyplot(), []
    for kind, draw in (("throughput", _throughput), ("latency", _latency)):
        fig, axes = plt.subplots(1, len(scenarios), figsize=(5.5 * len(scenarios), 4), squeeze=False)
        for ax, scenario in zip(axes[0], scenarios, strict=True):
            draw(ax, points, scenario, model)
        paths.append(report.save_figure(fig, out_stem.with_name(f"{out_stem.name}-{kind}.png")))
    return paths


def efficiency_section(
    points: list[Point], model: str, roofline: dict[str, Any] | None, path: Path | None
) -> list[str]:
    head = ["", "## Distance to the limit", ""]
    if roofline is None:
        return [*head, "No roofline results for this machine: run `python -m benchmarks.roofline`."]
    entry = roofline.get("models", {}).get(model)
    if entry is None or not entry.get("network_ceiling"):
        return [
            *head,
            f"{path.name if path else 'The roofline'} has no ceiling for {model} (an older format, or the "
            "model was not measured): run `python -m benchmarks.roofline`.",
        ]
    ceiling = float(entry["network_ceiling"])
    flops = float(entry["flops_per_row"])
    precision = entry.get("precision", "fp32")
    peak_gflops = roofline.get("peak_bf16_gflops") if precision == "bf16" else None
    if not peak_gflops:
        precision, peak_gflops = "fp32", roofline["peak_fp32_gflops"]
    peak = float(peak_gflops) * 1e9
    pipeline = entry.get("pipeline_ceiling") or {}
    link = f"[{path.name}]({path.with_suffix('.md').name})" if path else "the roofline"
    lines = [
        *head,
        f"From {link}: offline ceiling of the served networks (each at its best batch, back to back "
        f"on {roofline['threads']} threads) {fmt(ceiling)} images/s; the whole served pipeline offline "
        f"(pre/post included, in one process) {fmt(pipeline.get('rows_per_s'))} images/s at batch "
        f"{pipeline.get('batch', '–')}; {flops / 1e6:,.1f} MFLOP per image; measured peak {precision} GEMM "
        f"{float(peak_gflops):,.1f} GFLOP/s (the served precision's roof).",
        "",
        "| scenario | concurrency | Triton images/s | serving efficiency (served / network ceiling) | "
        "compute efficiency (achieved FLOP/s / peak) |",
        "|---|---:|---:|---:|---:|",
    ]
    for p in sorted((p for p in points if p.tool == "locust" and p.server == "triton"), key=_key):
        lines.append(
            f"| {p.scenario} | {p.concurrency} | {fmt(p.images_per_s)} | {p.images_per_s / ceiling:.0%} | "
            f"{p.images_per_s * flops / peak:.1%} |"
        )
    lines.append(f"| (offline ceiling) | – | {fmt(ceiling)} | 100% | {ceiling * flops / peak:.1%} |")
    return lines


def _key(p: Point) -> tuple[int, int]:
    return (p.images_per_request, p.concurrency)


def describe_triton(model: ServedModel, runtimes: dict[str, str]) -> str:
    b = model.batching
    shape = (
        "one fused Python model (pre, networks and post in one pass)"
        if model.fuse_on_cpu
        else "a Triton ensemble"
    )
    nets = ", ".join(f"{n} on {r}" for n, r in runtimes.items()) or "no networks"
    return (
        f"- **Triton** 2.51 (nvidia-pytriton 0.7.0), cpu target: {shape}, {nets}; "
        f"{model.served_cpu_instances} instance(s) x {model.cpu_threads} threads, dynamic batching preferred "
        f"{list(b.preferred_batch_sizes)}, max_queue_delay {b.max_queue_delay_us} µs, "
        f"max_batch_size {model.contract.max_batch_size}."
    )


def _header_lines(
    model: ServedModel,
    runtimes: dict[str, str],
    duration_s: float,
    weights_label: str,
    info: dict[str, Any],
    parity_result: tuple[int, float, int],
    baseline_threads: int,
    wall_s: float,
    quiet_timeout_s: float,
) -> list[str]:
    """What was compared, on what, and how (machine, weights, both servers, parity, load)."""
    # Not `import locust`: that monkey-patches this (threaded) process for gevent and deadlocks it.
    locust_version = importlib.metadata.version("locust")
    diff, psnr, rows = parity_result
    lines = [
        f"# {model.name} serving: Triton vs. eager-PyTorch baseline ({info['model']}, {info['cpus']} CPUs)",
        "",
        *report.run_lines(info, wall_s),
        f"- **Weights**: {weights_label}",
        report.bullet(report.GPU_LINE),
        describe_triton(model, runtimes),
        f"- **Baseline**: `benchmarks/baseline_server.py --model {model.name}`, the same steps with the "
        "networks in eager PyTorch behind a grpcio KServe v2 server, one request at a time (1 worker thread "
        f"+ lock), torch threads {baseline_threads} (= Triton's instances x threads), inter-op threads 1.",
        f"- **Same images**: on {rows} rows the servers differ by at most {diff} uint8 levels, PSNR "
        f"{psnr:.1f} dB (Triton's CPU runtimes vs PyTorch fp32; the gate is {PARITY_MIN_PSNR_DB:.0f} dB).",
        f"- **Load**: Locust {locust_version} over gRPC (tritonclient), closed loop (no wait time, "
        f"users = concurrency), payloads from the model's contract, {duration_s:g} s measured per point "
        "after spawning, runs interleaved triton/baseline per concurrency; both servers stay up, the idle "
        "one's CPU is shown.",
        "- **Shared machine**: "
        + (
            f"each point starts once other jobs use < 0.3 cores for 3 s (waiting at most "
            f"{quiet_timeout_s:g} s); their CPU during the point is the 'other jobs' CPU' column."
            if quiet_timeout_s > 0
            else "no waiting for other jobs (smoke); their CPU is the 'other jobs' CPU' column."
        ),
    ]
    return lines


LOCUST_COLUMNS = (
    "concurrency", "server", "images/s", "p50 ms", "p95 ms", "p99 ms", "requests", "errors",
    "client CPU (cores)", "server CPU (cores)", "idle server CPU", "other jobs' CPU",
)  # fmt: skip
RATIO_COLUMNS = ("scenario", "concurrency", "images/s ratio", "p99 ratio (lower = Triton faster)")


def _scenario_lines(points: list[Point], scenarios: list[str], concurrencies: list[int]) -> list[str]:
    """One Locust table per scenario, then the Triton / baseline ratios."""
    lines: list[str] = []
    for scenario in scenarios:
        n = next((p.images_per_request for p in points if p.scenario == scenario), 1)
        rows = [
            (c, server, fmt(p.images_per_s), fmt(p.p50_ms, 0), fmt(p.p95_ms, 0), fmt(p.p99_ms, 0),
             f"{p.requests:,}", p.failures, fmt(p.client_cores, 2), fmt(p.server_cores, 2),
             fmt(p.idle_server_cores, 2), fmt(p.foreign_cores, 2))
            for c in concurrencies
            for server in SERVERS
            if (p := _find(points, "locust", server, scenario, c)) is not None
        ]  # fmt: skip
        title = f"## {scenario}: {n} image{'s' if n > 1 else ''} per request"
        lines += ["", title, "", *table(LOCUST_COLUMNS, rows, "rl" + "r" * 10)]
    ratios = []
    for scenario in scenarios:
        for c in concurrencies:
            t = _find(points, "locust", "triton", scenario, c)
            bl = _find(points, "locust", "baseline", scenario, c)
            if t and bl:
                speed, p99 = _ratio(t.images_per_s, bl.images_per_s), _ratio(t.p99_ms, bl.p99_ms)
                ratios.append((scenario, c, f"{fmt(speed, 2)}x", f"{fmt(p99, 2)}x"))
    return [*lines, "", "## Ratios (Triton / baseline, Locust)", "", *table(RATIO_COLUMNS, ratios, "lrrr")]


def render(
    points: list[Point],
    *,
    model: ServedModel,
    runtimes: dict[str, str],
    scenarios: list[str],
    concurrencies: list[int],
    duration_s: float,
    weights_label: str,
    info: dict[str, Any],
    parity_result: tuple[int, float, int],
    baseline_threads: int,
    plots: list[Path],
    roofline: dict[str, Any] | None,
    roofline_path: Path | None,
    wall_s: float,
    quiet_timeout_s: float,
) -> str:
    lines = _header_lines(
        model,
        runtimes,
        duration_s,
        weights_label,
        info,
        parity_result,
        baseline_threads,
        wall_s,
        quiet_timeout_s,
    )
    lines += _scenario_lines(points, scenarios, concurrencies)
    errors = {k: v for p in points for k, v in p.errors.items()}
    if errors:
        lines += ["", "Errors seen:", ""] + [f"- {v} x `{k[:300]}`" for k, v in errors.items()]
    lines += perf_analyzer_section(points, info)
    lines += efficiency_section(points, model.name, roofline, roofline_path)
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines) + "\n"


def perf_analyzer_section(points: list[Point], info: dict[str, Any]) -> list[str]:
    pa_points = [p for p in points if p.tool == "perf_analyzer"]
    if not pa_points:
        return []
    lines = [
        "",
        "## Cross-check with perf_analyzer (tritonclient 2.51.0, C++ client)",
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
            f"| {pa.scenario} | {pa.concurrency} | {pa.server} | {fmt(lo.images_per_s)} | "
            f"{fmt(pa.images_per_s)} | {gap:+.0%} | {fmt(lo.p99_ms, 0)} | {fmt(pa.p99_ms, 0)} | "
            f"{fmt(lo.client_cores, 2)} | {fmt(pa.client_cores, 2)} | "
            f"{fmt(lo.foreign_cores, 2)} / {fmt(pa.foreign_cores, 2)} |"
        )
    lines += ["", "gap = (perf_analyzer - Locust) / perf_analyzer."]
    if not big:
        return [*lines, "", f"All Locust and perf_analyzer throughputs agree within {GAP_THRESHOLD:.0%}."]
    lines += ["", f"Gaps above {GAP_THRESHOLD:.0%} (facts for the explanation in benchmarks/README.md):", ""]
    for pa, lo, gap in big:
        lines.append(
            f"- {pa.scenario} c={pa.concurrency} {pa.server}: {gap:+.0%}; Locust's client used "
            f"{fmt(lo.client_cores, 2)} cores and the server {fmt(lo.server_cores, 2)} of "
            f"{info['cpus']}, perf_analyzer's client {fmt(pa.client_cores, 2)} cores and the server "
            f"{fmt(pa.server_cores, 2)}."
        )
    return lines


# --- main --------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=REGISTRY.names(), default=harness.DEFAULT_MODEL)
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--duration", type=float, default=15.0, help="measured seconds per point")
    p.add_argument(
        "--rows", type=int, nargs="+", default=[1, 16], help="rows (images) per request: scenarios"
    )
    harness.add_arguments(p, quiet=False)
    p.add_argument("--baseline-threads", type=int, default=None, help="default: Triton's instances x threads")
    p.add_argument("--perf-analyzer", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--pa-measurement-ms", type=int, default=5000)
    p.add_argument("--roofline", type=Path, default=None, help="roofline JSON (default: newest in results)")
    p.add_argument(
        "--quiet-timeout", type=float, default=300.0, help="max seconds to wait for other jobs to go quiet"
    )
    p.add_argument(
        "--smoke", action="store_true", help="one concurrency, 3 s, 1 row, no perf_analyzer, no waiting"
    )
    g = p.add_argument_group("Triton config overrides (default: the model's spec in ecomgen/specs)")
    g.add_argument("--cpu-instances", type=int, default=None)
    g.add_argument("--cpu-threads", type=int, default=None)
    g.add_argument("--max-queue-delay-us", type=int, default=None)
    g.add_argument("--preferred-batch-sizes", type=int, nargs="*", default=None)
    p.add_argument("--label", default="", help="suffix of the results file names, e.g. 'tuned'")
    opt = p.parse_args(argv)
    if opt.smoke:
        opt.concurrency, opt.duration, opt.rows, opt.perf_analyzer = [4], 3.0, [1], False
        opt.quiet_timeout = 0.0
    return opt


def served_variant(opt: argparse.Namespace) -> ServedModel:
    """The registry's model with the command line's overrides."""
    model = harness.with_runtime(REGISTRY[opt.model], opt.cpu_runtime)
    b = model.batching
    return dataclasses.replace(
        model,
        cpu_instances=opt.cpu_instances or model.cpu_instances,
        fused_cpu_instances=opt.cpu_instances or model.fused_cpu_instances,
        cpu_threads=opt.cpu_threads or model.cpu_threads,
        batching=Batching(
            tuple(
                b.preferred_batch_sizes if opt.preferred_batch_sizes is None else opt.preferred_batch_sizes
            ),
            b.max_queue_delay_us if opt.max_queue_delay_us is None else opt.max_queue_delay_us,
        ),
    )


def result_kind(opt: argparse.Namespace, model: ServedModel) -> str:
    """The results file's kind: ``<model>-compare`` (another model than the default), ``smoke``, the label."""
    parts = [
        "" if model.name == harness.DEFAULT_MODEL else f"{model.name}-compare",
        "smoke" if opt.smoke else "",
        opt.label,
    ]
    return "-".join(filter(None, parts))


def perf_analyzer_points(
    opt: argparse.Namespace,
    model: ServedModel,
    plan: list[tuple[int, int, str]],
    urls: dict[str, str],
    cpu: Sampler,
) -> list[Point]:
    """The same plan measured by perf_analyzer, with the CPU of both servers and of other jobs."""
    points = []
    for rows, conc, server in tqdm(plan, desc="perf_analyzer", unit="run"):
        harness.wait_until_quiet(timeout_s=opt.quiet_timeout)
        t0 = time.time()
        r = perf_analyzer.run(urls[server], conc, rows, model.name, measurement_ms=opt.pa_measurement_ms)
        t1 = time.time()
        point = Point(
            "perf_analyzer", server, scenario_name(rows), conc, rows, r.images_per_s, p50_ms=r.p50_ms,
            p95_ms=r.p95_ms, p99_ms=r.p99_ms, avg_ms=r.avg_ms, client_cores=r.client_cores,
            windows=r.window_images_per_s, **cpu_fields(cpu, server, t0, t1),
        )  # fmt: skip
        points.append(point)
    return points


def measure(
    opt: argparse.Namespace, h: harness.Harness, model: ServedModel, threads: int, rows_list: list[int]
) -> tuple[list[Point], tuple[int, float, int]]:
    """With Triton up (the harness), start the baseline, check both serve the same images, then run
    every point (Locust, then perf_analyzer). Returns the points and the parity result."""
    points: list[Point] = []
    with (
        harness.baseline_server(model, h.weights, threads, h.tmp / "baseline.log") as (baseline_url, pid),
        Sampler({"triton": h.pid, "baseline": pid}, interval_s=0.25, memory=False) as cpu,
    ):
        urls = {"triton": h.url, "baseline": baseline_url}
        parity_result = parity(model, h.url, baseline_url)
        for url in urls.values():
            warm_up(url, model)
        plan = [(r, conc, srv) for r in rows_list for conc in opt.concurrency for srv in SERVERS]
        for rows, conc, server in tqdm(plan, desc="locust", unit="run"):
            harness.wait_until_quiet(
                timeout_s=opt.quiet_timeout
            )  # shared machine: start each point when quiet
            summary, code = run_locust(urls[server], model.name, rows, conc, opt.duration, h.tmp)
            points.append(locust_point(server, rows, conc, summary, code, cpu))
        if opt.perf_analyzer:
            points += perf_analyzer_points(opt, model, plan, urls, cpu)
    return points, parity_result


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    model = served_variant(opt)
    c = model.contract
    rows_list = sorted({min(r, c.max_batch_size) if c.batched else 1 for r in opt.rows})
    scenarios = [scenario_name(r) for r in rows_list]
    threads = opt.baseline_threads or default_threads(model)
    started = time.monotonic()
    with harness.Harness([model], opt.weights, prefix="ecomgen-compare-") as h:
        points, parity_result = measure(opt, h, model, threads, rows_list)
    info, runtimes, weights_label = h.machine, h.runtimes, h.weights_label
    opt.out.mkdir(parents=True, exist_ok=True)
    stem = opt.out / report.result_stem(result_kind(opt, model), info)

    roofline_path = opt.roofline or (
        None if opt.smoke else report.newest(f"*-{report.machine_slug(info)}-roofline.json")
    )
    roofline = json.loads(roofline_path.read_text()) if roofline_path and roofline_path.exists() else None
    plots = plot(points, scenarios, stem, model.name)
    md = render(
        points,
        model=model,
        runtimes=runtimes,
        scenarios=scenarios,
        concurrencies=opt.concurrency,
        duration_s=opt.duration,
        weights_label=weights_label,
        info=info,
        parity_result=parity_result,
        baseline_threads=threads,
        plots=plots,
        roofline=roofline,
        roofline_path=roofline_path,
        wall_s=time.monotonic() - started,
        quiet_timeout_s=opt.quiet_timeout,
    )
    stem.with_suffix(".md").write_text(md)
    report.write_json(
        stem.with_suffix(".json"),
        {
            "command": report.command_line(),
            "model": model.name,
            "machine": info,
            "weights": weights_label,
            "runtimes": runtimes,
            "parity_max_uint8_diff": parity_result[0],
            "parity_psnr_db": parity_result[1],
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
    return 1 if failed or parity_result[1] < PARITY_MIN_PSNR_DB else 0


if __name__ == "__main__":
    sys.exit(main())
