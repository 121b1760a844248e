"""Soak: the real launcher at twice its measured capacity for minutes; nothing may crash or leak.

1. Start ``python -m ecomgen serve --no-build`` (the hardened launcher, supervision on) on the
   built repository, on free loopback ports.
2. Measure capacity: closed-loop clients for ``--probe-s`` seconds over a mix of models.
3. Offer twice that rate, open loop (requests start on a schedule, whether or not earlier
   ones finished), for ``--minutes``, with the thin client (one deadline per request, no
   retries so the offered load stays what it says).
4. Count answers (ok, queue full, queue timeout, deadline, other errors), sample the RSS of
   the whole process tree (launcher, tritonserver, Python stubs) every 0.5 s, stop with
   SIGTERM, and check the exit code (0: a clean drain), that Triton restarted 0 times and
   that no ``triton_python_backend_stub`` of this server is left.

    python -m benchmarks.soak --minutes 5        # writes benchmarks/results/<date>-<cpu>-soak.{md,json,png}
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import harness, report
from benchmarks.payloads import Payload, payload
from ecomgen.launcher import LISTENING, Launched, Sampler, group_members, proc_cmdline
from ecomgen_client import (
    AsyncProductClient,
    InvalidInputError,
    QueueFullError,
    QueueTimeoutError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from training.paths import MODEL_REPOSITORY, REPO_ROOT

# The traffic mix: (model, rows per request, weight). Thumbnails dominate, as on a catalogue site.
MIX = (
    ("product_gan", 1, 8),
    ("product_gan", 64, 1),
    ("product_detail", 1, 2),
    ("upscale", 1, 2),
    ("tryon", 1, 1),
    ("personalize", 1, 1),
    ("ad_creative", 1, 1),
    ("inventory_image", 1, 1),
    ("inventory_sheet", 1, 1),
)
STUB = "triton_python_backend_stub"


@dataclass
class Tally:
    started: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)  # seconds, successful requests

    def classify(self, outcome: object) -> str:
        for cls, name in (
            (QueueFullError, "rejected: queue full"),
            (QueueTimeoutError, "rejected: queue timeout"),
            (RequestTimeoutError, "deadline exceeded"),
            (ServerUnavailableError, "server unavailable"),
            (InvalidInputError, "invalid input (a bug here)"),
        ):
            if isinstance(outcome, cls):
                return name
        return "ok" if not isinstance(outcome, Exception) else f"other: {type(outcome).__name__}"


def payloads(models: set[str]) -> list[tuple[Payload, int]]:
    out = []
    for i, (model, rows, weight) in enumerate(MIX):
        if model in models:
            out.append((payload(model, rows=rows, index=i), weight))
    return out


async def one(client: AsyncProductClient, p: Payload, tally: Tally, timeout_s: float) -> None:
    tally.started += 1
    start = time.perf_counter()
    try:
        await client.infer(p.model, p.inputs, outputs=p.outputs, timeout_s=timeout_s)
        outcome: object = None
        tally.latencies.append(time.perf_counter() - start)
    except Exception as e:  # every answer is counted by kind
        outcome = e
    tally.answers[tally.classify(outcome)] += 1


async def closed_loop(url: str, mix: list[tuple[Payload, int]], seconds: float, users: int) -> float:
    """Requests per second that ``users`` back-to-back clients get through: the capacity."""
    tally = Tally()
    rng = random.Random(0)
    chosen = [p for p, w in mix for _ in range(w)]
    deadline = time.monotonic() + seconds
    async with AsyncProductClient(url, retries=0, timeout_s=30) as client:

        async def user() -> None:
            while time.monotonic() < deadline:
                await one(client, rng.choice(chosen), tally, 30)

        start = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(users)))
        elapsed = time.perf_counter() - start
    return tally.answers["ok"] / elapsed


async def open_loop(
    url: str, mix: list[tuple[Payload, int]], rate: float, seconds: float, timeout_s: float
) -> Tally:
    """Start requests at ``rate`` per second (Poisson arrivals), whatever the server does."""
    tally = Tally()
    rng = random.Random(1)
    chosen = [p for p, w in mix for _ in range(w)]
    tasks: set[asyncio.Task[None]] = set()
    async with AsyncProductClient(url, retries=0, timeout_s=timeout_s) as client:
        start = time.monotonic()
        next_at = start
        while next_at < start + seconds:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            task = asyncio.ensure_future(one(client, rng.choice(chosen), tally, timeout_s))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += rng.expovariate(rate)
        await asyncio.gather(*tasks)
    return tally


def stubs_of(output: str) -> list[int]:
    """Python stubs still alive in the process group of any tritonserver the launcher started (each
    leads its own group; the launcher prints its pid after every ready banner)."""
    groups = {int(pid) for pid in re.findall(LISTENING, output)}
    return [
        p
        for g in groups
        for p in group_members(g)
        if proc_cmdline(p)[:1] and proc_cmdline(p)[0].endswith(STUB)
    ]


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY, help="built by `ecomgen build`")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--probe-s", type=float, default=30.0, help="capacity measurement, seconds")
    p.add_argument("--users", type=int, default=16, help="closed-loop clients for the capacity probe")
    p.add_argument("--overload", type=float, default=2.0, help="offered load / capacity")
    p.add_argument("--timeout-s", type=float, default=5.0, help="each request's deadline")
    p.add_argument("--models", default=",".join(sorted({m for m, _, _ in MIX})))
    p.add_argument("--idle-s", type=float, default=30.0, help="idle wait before and after the overload")
    p.add_argument("--out-dir", type=Path, default=report.RESULTS_DIR)
    return p.parse_args(argv)


def memory_now(rss: Sampler) -> dict[str, float]:
    """The server tree's memory now, MiB: RSS, PSS (shared pages split between their processes) and
    its /dev/shm regions and tables."""
    rss.sample()
    s = rss.latest("server")
    assert s is not None
    return {"rss": round(s.rss / 2**20, 1), "pss": round(s.pss / 2**20, 1), "shm": round(s.shm / 2**20, 1)}


def load(url: str, opt: argparse.Namespace, rss: Sampler) -> dict[str, Any]:
    """Capacity, then twice it (``--overload``) for ``--minutes``, then ``--idle-s`` of nothing: the
    figures of the load, with the memory before any request, idle after the capacity probe (warm),
    at its peak under the overload, and after the idle wait."""
    time.sleep(2)
    cold = memory_now(rss)
    mix = payloads(set(opt.models.split(",")))
    capacity = asyncio.run(closed_loop(url, mix, opt.probe_s, opt.users))
    time.sleep(opt.idle_s)
    warm = memory_now(rss)
    rss.take_peak("server")
    rate = opt.overload * capacity
    print(f"capacity {capacity:.1f} req/s; offering {rate:.1f} req/s for {opt.minutes} min", flush=True)
    start = time.monotonic()
    tally = asyncio.run(open_loop(url, mix, rate, opt.minutes * 60, opt.timeout_s))
    duration = time.monotonic() - start
    peak = rss.take_peak("server")
    end = memory_now(rss)
    time.sleep(opt.idle_s)
    after = memory_now(rss)
    lat = sorted(tally.latencies)
    mib = 2**20
    return {
        "capacity_req_s": round(capacity, 2),
        "offered_req_s": round(rate, 2),
        "duration_s": round(duration, 1),
        "requests": tally.started,
        "answers": dict(tally.answers),
        "goodput_req_s": round(tally.answers["ok"] / duration, 2),
        "goodput_of_capacity": round(tally.answers["ok"] / duration / capacity, 3) if capacity else None,
        "p50_ok_s": round(lat[len(lat) // 2], 3) if lat else None,
        "p99_ok_s": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
        "idle_s": opt.idle_s,
        "memory_mib": {
            "before any request": cold,
            "idle after the capacity probe": warm,
            "peak under overload": {k: round(getattr(peak, k) / mib, 1) for k in ("rss", "pss", "shm")},
            "end of the overload": end,
            f"after {opt.idle_s:g} s idle": after,
        },
        "rss_idle_mib": warm["rss"],
        "rss_end_mib": end["rss"],  # before the drain frees it all
    }


def run(opt: argparse.Namespace) -> dict[str, Any]:
    log = Path(tempfile.gettempdir()) / f"ecomgen-soak-launcher-{os.getpid()}.log"
    opt.out_dir.mkdir(parents=True, exist_ok=True)
    root = ["--allow-root"] if os.geteuid() == 0 else []
    server = Launched(opt.repository.resolve(), *root, serve=True, cwd=REPO_ROOT, log=log, stop_timeout_s=120)
    with server, Sampler({"server": server.pid}, interval_s=0.5, memory=True, machine=False) as rss:
        try:
            figures = load(server.grpc_url, opt, rss)
        finally:
            code = server.stop()
    time.sleep(1)
    series = rss.series("server")
    return {
        "machine": harness.machine_info(),
        "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]),
        "mix": [{"model": m, "rows": r, "weight": w} for m, r, w in MIX if m in opt.models.split(",")],
        **{k: v for k, v in figures.items() if k != "rss_end_mib"},
        "rss_peak_mib": figures["memory_mib"]["peak under overload"]["rss"],
        "rss_end_mib": figures["rss_end_mib"],
        "rss_series": series[::4],
        "launcher_exit_code": code,
        "crashes": len(re.findall(r"tritonserver crashed", server.output())),
        "timeout_s": opt.timeout_s,
        "orphaned_stubs": len(stubs_of(server.output())),
    }


def memory_table(result: dict[str, Any]) -> str:
    """Memory at each moment of the run, and the verdict: back within 20% of the warm idle level."""
    rows = result["memory_mib"]
    warm = rows["idle after the capacity probe"]
    after = rows[f"after {result['idle_s']:g} s idle"]
    lines = ["| server tree memory (MiB) | RSS | PSS | /dev/shm |", "|---|---:|---:|---:|"]
    lines += [f"| {k} | {v['rss']:,.0f} | {v['pss']:,.0f} | {v['shm']:,.0f} |" for k, v in rows.items()]
    ratio = after["pss"] / warm["pss"] if warm["pss"] else float("nan")
    verdict = "met" if ratio <= 1.2 else "missed"
    lines += [
        "",
        f"After {result['idle_s']:g} s idle the PSS is **{ratio:.2f}×** its idle level after the capacity "
        f"probe (target ≤ 1.20: {verdict}); the first row is before any request, when no step has "
        "loaded its runtime's buffers yet.",
    ]
    return "\n".join(lines)


def write_report(result: dict[str, Any], out_dir: Path) -> Path:
    stem = out_dir / report.result_stem("soak", result["machine"])
    report.write_json(stem.with_suffix(".json"), result)
    t, mib = zip(*result["rss_series"], strict=True) if result["rss_series"] else ((), ())
    fig, ax = report.pyplot().subplots(figsize=(7, 3))
    ax.plot(t, mib)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("RSS of the server tree (MiB)")
    ax.set_title(
        f"soak at {result['offered_req_s']:.0f} req/s offered ({result['capacity_req_s']:.0f} capacity)"
    )
    report.save_figure(fig, stem.with_suffix(".png"))
    answers = "\n".join(f"| {k} | {v} |" for k, v in sorted(result["answers"].items()))
    rss = f"{result['rss_idle_mib']} / {result['rss_peak_mib']} / {result['rss_end_mib']} MiB"
    mix = ", ".join(f"{m['model']} x{m['rows']} ({m['weight']})" for m in result["mix"])
    share = f"**{result['goodput_of_capacity']:.0%} of capacity** (target ≥ 90%)"
    goodput = f"{result['goodput_req_s']} req/s = {share}"
    text = f"""# Soak: twice the capacity for {result["duration_s"] / 60:.1f} minutes

Command: `{result["command"]}` (the real launcher, `ecomgen serve --no-build`, supervision on).

{report.machine_line(result["machine"])}

| figure | value |
|---|---|
| capacity (closed loop, the mix below) | {result["capacity_req_s"]} req/s |
| offered (open loop, Poisson arrivals) | {result["offered_req_s"]} req/s |
| requests sent | {result["requests"]} |
| goodput (answered with images, per second of overload) | {goodput} |
| p50 / p99 of the successful ones | {result["p50_ok_s"]} s / {result["p99_ok_s"]} s |
| RSS of the server tree: idle / peak / end of the load | {rss} |
| Triton crashes (the launcher restarts it) | {result["crashes"]} |
| launcher exit code after SIGTERM (0: clean drain) | {result["launcher_exit_code"]} |
| orphaned Python stubs after the stop | {result["orphaned_stubs"]} |

| answer | count |
|---|---:|
{answers}

{memory_table(result)}

Mix (model, rows per request, weight): {mix}.
Every request carries a {result["timeout_s"]:g} s deadline and is not retried, so the offered load stays
as stated.

![RSS over the soak]({stem.with_suffix(".png").name})
"""
    stem.with_suffix(".md").write_text(text)
    return stem.with_suffix(".md")


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    result = run(opt)
    path = write_report(result, opt.out_dir)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rss_series", "machine")}, indent=2))
    print(f"wrote {path}")
    failed = result["crashes"] or result["orphaned_stubs"] or result["launcher_exit_code"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
