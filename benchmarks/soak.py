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
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from benchmarks.common import RESULTS_DIR, free_port, machine_info, machine_line, result_stem, write_json
from benchmarks.payloads import Payload, payload
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


class RssSampler:
    """Peak and time series of the resident memory of a process and all its descendants."""

    def __init__(self, pid: int, period_s: float = 0.5) -> None:
        self.root = psutil.Process(pid)
        self.period_s = period_s
        self.series: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        start = time.monotonic()
        while not self._stop.wait(self.period_s):
            try:
                procs = [self.root, *self.root.children(recursive=True)]
                rss = sum(p.memory_info().rss for p in procs if p.is_running())
            except psutil.Error:
                continue
            self.series.append((time.monotonic() - start, rss / 2**20))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_mib(self) -> float:
        return max((m for _, m in self.series), default=0.0)


def stubs_of(pgid: int | None) -> list[int]:
    """Python stubs still alive that belonged to the server's process group (or any, if unknown)."""
    out = []
    for p in psutil.process_iter(["name", "cmdline"]):
        try:
            is_stub = STUB in " ".join(p.info["cmdline"] or []) or p.info["name"] == STUB
            if is_stub and (pgid is None or os.getpgid(p.pid) == pgid):
                out.append(p.pid)
        except (psutil.Error, ProcessLookupError):
            continue
    return out


def start_launcher(repository: Path, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    grpc_port = free_port()
    cmd = [
        sys.executable, "-m", "ecomgen", "serve", "--no-build", "--repository", str(repository),
        "--grpc-port", str(grpc_port), "--http-port", str(free_port()), "--metrics-port", str(free_port()),
    ]  # fmt: skip
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    out = log.open("wb")
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the launcher exited with {proc.returncode}; see {log}")
        if b"ecomgen: ready" in log.read_bytes():
            return proc, f"127.0.0.1:{grpc_port}"
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"the server was not ready after 300 s; see {log}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY, help="built by `ecomgen build`")
    p.add_argument("--minutes", type=float, default=5.0)
    p.add_argument("--probe-s", type=float, default=30.0, help="capacity measurement, seconds")
    p.add_argument("--users", type=int, default=16, help="closed-loop clients for the capacity probe")
    p.add_argument("--overload", type=float, default=2.0, help="offered load / capacity")
    p.add_argument("--timeout-s", type=float, default=5.0, help="each request's deadline")
    p.add_argument("--models", default=",".join(sorted({m for m, _, _ in MIX})))
    p.add_argument("--out-dir", type=Path, default=RESULTS_DIR)
    return p.parse_args(argv)


def run(opt: argparse.Namespace) -> dict[str, Any]:
    log = Path(tempfile.gettempdir()) / f"ecomgen-soak-launcher-{os.getpid()}.log"
    opt.out_dir.mkdir(parents=True, exist_ok=True)
    proc, url = start_launcher(opt.repository.resolve(), log)
    pgid = None
    with RssSampler(proc.pid) as rss:
        try:
            time.sleep(2)
            idle_mib = rss.series[-1][1] if rss.series else 0.0
            mix = payloads(set(opt.models.split(",")))
            capacity = asyncio.run(closed_loop(url, mix, opt.probe_s, opt.users))
            rate = opt.overload * capacity
            print(
                f"capacity {capacity:.1f} req/s; offering {rate:.1f} req/s for {opt.minutes} min", flush=True
            )
            start = time.monotonic()
            tally = asyncio.run(open_loop(url, mix, rate, opt.minutes * 60, opt.timeout_s))
            duration = time.monotonic() - start
            load_end_mib = rss.series[-1][1] if rss.series else 0.0  # before the drain frees it all
            triton = [
                c for c in psutil.Process(proc.pid).children() if "tritonserver" in " ".join(c.cmdline())
            ]
            pgid = os.getpgid(triton[0].pid) if triton else None
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=120)
    time.sleep(1)
    text = log.read_text(errors="replace")
    crashes = len(re.findall(r"tritonserver crashed", text))
    lat = sorted(tally.latencies)
    return {
        "machine": machine_info(),
        "command": "python -m benchmarks.soak " + " ".join(sys.argv[1:]),
        "mix": [{"model": m, "rows": r, "weight": w} for m, r, w in MIX if m in opt.models.split(",")],
        "capacity_req_s": round(capacity, 2),
        "offered_req_s": round(rate, 2),
        "duration_s": round(duration, 1),
        "requests": tally.started,
        "answers": dict(tally.answers),
        "p50_ok_s": round(lat[len(lat) // 2], 3) if lat else None,
        "p99_ok_s": round(lat[int(len(lat) * 0.99)], 3) if lat else None,
        "rss_idle_mib": round(idle_mib, 1),
        "rss_peak_mib": round(rss.peak_mib, 1),
        "rss_end_mib": round(load_end_mib, 1),
        "rss_series": rss.series[::4],
        "launcher_exit_code": code,
        "crashes": crashes,
        "timeout_s": opt.timeout_s,
        "orphaned_stubs": len(stubs_of(pgid)),
    }


def report(result: dict[str, Any], out_dir: Path) -> Path:
    stem = out_dir / result_stem("soak", result["machine"])
    write_json(stem.with_suffix(".json"), result)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        t, mib = zip(*result["rss_series"], strict=True) if result["rss_series"] else ((), ())
        fig, ax = plt.subplots(figsize=(7, 3))
        ax.plot(t, mib)
        ax.set_xlabel("seconds since start")
        ax.set_ylabel("RSS of the server tree (MiB)")
        ax.set_title(
            f"soak at {result['offered_req_s']:.0f} req/s offered ({result['capacity_req_s']:.0f} capacity)"
        )
        fig.tight_layout()
        fig.savefig(stem.with_suffix(".png"), dpi=110)
        plt.close(fig)
    except ImportError:
        pass
    answers = "\n".join(f"| {k} | {v} |" for k, v in sorted(result["answers"].items()))
    rss = f"{result['rss_idle_mib']} / {result['rss_peak_mib']} / {result['rss_end_mib']} MiB"
    mix = ", ".join(f"{m['model']} x{m['rows']} ({m['weight']})" for m in result["mix"])
    text = f"""# Soak: twice the capacity for {result["duration_s"] / 60:.1f} minutes

Command: `{result["command"]}` (the real launcher, `ecomgen serve --no-build`, supervision on).

{machine_line(result["machine"])}

| figure | value |
|---|---|
| capacity (closed loop, the mix below) | {result["capacity_req_s"]} req/s |
| offered (open loop, Poisson arrivals) | {result["offered_req_s"]} req/s |
| requests sent | {result["requests"]} |
| p50 / p99 of the successful ones | {result["p50_ok_s"]} s / {result["p99_ok_s"]} s |
| RSS of the server tree: idle / peak / end of the load | {rss} |
| Triton crashes (the launcher restarts it) | {result["crashes"]} |
| launcher exit code after SIGTERM (0: clean drain) | {result["launcher_exit_code"]} |
| orphaned Python stubs after the stop | {result["orphaned_stubs"]} |

| answer | count |
|---|---:|
{answers}

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
    path = report(result, opt.out_dir)
    print(json.dumps({k: v for k, v in result.items() if k not in ("rss_series", "machine")}, indent=2))
    print(f"wrote {path}")
    failed = result["crashes"] or result["orphaned_stubs"] or result["launcher_exit_code"] != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
