"""Sweep Triton's knobs for a served model under load and recommend a configuration for its spec.

Each variant is ``dataclasses.replace`` on the model's ``ServedModel`` (``--model``,
default product_gan; on an ensemble the batching knobs apply to every step, capped at
each step's max batch) rendered into a temporary repository by the same builder as
``export/repository.py``; Triton is restarted for each and loaded at a fixed concurrency
(default 32, one row per request) by perf_analyzer (a C++ client, so less of the 2 cores
goes to the load generator than with Locust) or by Locust.

Every variant is also measured at concurrency 1, where a queue delay is pure added
latency. The search is greedy, one knob family at a time, each stage starting from the
best so far: (instances x threads) -> max_queue_delay -> preferred batch sizes; within
the noise of the best throughput, the lowest low-load p99 wins. At the end the winner
and the current spec are re-measured alternately to show the noise. Writes
``benchmarks/results/<date>-<machine>-tune.{md,json}`` (``-<model>-tune`` for another model).

    python -m benchmarks.tune
    python -m benchmarks.tune --load locust --concurrency 32 --seconds 10
    python -m benchmarks.tune --model tryon --concurrency 8 --instances-threads 1x2 2x1
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from benchmarks import harness, perf_analyzer, report
from benchmarks.compare import run_locust, warm_up
from benchmarks.report import table
from ecomgen.launcher import Sampler
from ecomgen.registry import REGISTRY
from ecomgen.spec import Batching, NetworkStep, PythonStep, ServedModel, Step

# Throughputs within this fraction of the best count as a tie, broken by the lower p99.
TIE = 0.08  # run-to-run noise on this shared VM is about +-7% (see the confirm rows)


@dataclass(frozen=True)
class Variant:
    instances: int
    threads: int
    delay_us: int
    preferred: tuple[int, ...]

    @classmethod
    def of(cls, model: ServedModel) -> Variant:
        b = model.batching
        instances = model.served_cpu_instances
        return cls(instances, model.cpu_threads, b.max_queue_delay_us, b.preferred_batch_sizes)

    def apply(self, base: ServedModel) -> ServedModel:
        """``base`` with these knobs; an ensemble's steps get the same batching, capped at their max."""

        def batching(max_batch: int) -> Batching:
            return Batching(tuple(p for p in self.preferred if p <= max_batch), self.delay_us)

        def step(s: Step) -> Step:
            if isinstance(s, NetworkStep):
                net = dataclasses.replace(s.network, batching=batching(s.network.max_batch_size))
                return dataclasses.replace(s, network=net)
            if isinstance(s, PythonStep) and s.batching is not None:
                return dataclasses.replace(s, batching=batching(base.step_max_batch(s)))
            return s

        return dataclasses.replace(
            base,
            cpu_instances=self.instances,
            fused_cpu_instances=self.instances,
            cpu_threads=self.threads,
            batching=batching(base.contract.max_batch_size),
            steps=tuple(step(s) for s in base.steps),
        )

    def __str__(self) -> str:
        pref = ",".join(map(str, self.preferred)) or "none"
        return f"{self.instances}x{self.threads}thr delay={self.delay_us}us pref=[{pref}]"


@dataclass
class Measurement:
    stage: str
    variant: Variant
    images_per_s: float
    p50_ms: float
    p99_ms: float
    server_cores: float
    client_cores: float
    failures: int = 0
    foreign_cores: float = math.nan  # other jobs on the (shared) machine
    note: str = ""
    concurrency: int = 0
    low: Measurement | None = None  # the same variant at low concurrency (queue delay shows there)

    @property
    def low_p99_ms(self) -> float:
        return self.low.p99_ms if self.low is not None else math.nan


def measure(
    variant: Variant,
    base: ServedModel,
    h: harness.Harness,
    stage: str,
    opt: argparse.Namespace,
    concurrencies: list[int] | None = None,
) -> list[Measurement]:
    """Start Triton with ``variant``, load it at each concurrency in turn, stop it."""
    model = variant.apply(base)
    repository, _ = h.repository_for([model], Path(tempfile.mkdtemp(dir=h.tmp)).name)
    out = []
    with (
        h.serve(repository) as server,
        Sampler({"triton": server.triton_pid}, interval_s=0.25, memory=False) as cpu,
    ):
        warm_up(server.grpc_url, model)
        for c in concurrencies or [opt.concurrency]:
            # The machine is shared: start on a quiet machine.
            harness.wait_until_quiet(timeout_s=opt.quiet_timeout)
            out.append(_load(server.grpc_url, model.name, c, cpu, stage, variant, opt, repository.parent))
    return out


def _load(
    url: str,
    model: str,
    concurrency: int,
    cpu: Sampler,
    stage: str,
    variant: Variant,
    opt: argparse.Namespace,
    root: Path,
) -> Measurement:
    t0 = time.time()
    if opt.load == "perf_analyzer":
        r = perf_analyzer.run(url, concurrency, opt.rows, model, measurement_ms=int(opt.seconds * 1000))
        t1 = time.time()
        return Measurement(
            stage,
            variant,
            r.images_per_s,
            r.p50_ms,
            r.p99_ms,
            cpu.cores("triton", t0, t1),
            r.client_cores,
            foreign_cores=cpu.foreign(t0, t1),
            note=_spread(r.window_images_per_s),
            concurrency=concurrency,
        )
    summary, _code = run_locust(url, model, opt.rows, concurrency, opt.seconds, root)
    total, window = summary["total"], summary["window"]
    ok = total["requests"] - total["failures"]
    return Measurement(
        stage,
        variant,
        total["rps"] * (ok / total["requests"] if total["requests"] else 0.0) * opt.rows,
        total["p50_ms"],
        total["p99_ms"],
        cpu.cores("triton", window["start"], window["end"]),
        window.get("client_cores") or math.nan,
        failures=total["failures"],
        foreign_cores=cpu.foreign(window["start"], window["end"]),
        concurrency=concurrency,
    )


def _low(m: Measurement) -> tuple[str, str, str]:
    if m.low is None:
        return "–", "–", "–"
    return f"{m.low.images_per_s:,.1f}", f"{m.low.p50_ms:,.1f}", f"{m.low.p99_ms:,.1f}"


def _spread(windows: list[float]) -> str:
    return f"windows {min(windows):,.0f}–{max(windows):,.0f}" if windows else ""


def best_of(ms: list[Measurement]) -> Measurement:
    """Highest images/s under load; within TIE of it, the lowest p99 at low load (then under load).

    Throughput alone picks long queue delays, which cost a lone request the whole delay.
    """
    clean = [m for m in ms if not m.failures] or ms
    top = max(m.images_per_s for m in clean)
    tied = [m for m in clean if m.images_per_s >= top * (1 - TIE)]
    return min(tied, key=lambda m: (m.low_p99_ms if not math.isnan(m.low_p99_ms) else 0.0, m.p99_ms))


def stages(opt: argparse.Namespace, max_batch: int) -> list[tuple[str, Any]]:
    preferred = {tuple(int(x) for x in s.split(",") if x and int(x) <= max_batch) for s in opt.preferred}
    return [
        ("instances x threads", [_instances_threads(s) for s in opt.instances_threads]),
        ("max_queue_delay_us", opt.delays),
        ("preferred_batch_sizes", sorted(preferred, key=lambda p: (len(p), p))),
    ]


def _instances_threads(text: str) -> tuple[int, int]:
    """``"2x1"`` -> (2 instances, 1 thread each)."""
    instances, threads = map(int, text.split("x"))
    return instances, threads


def apply(v: Variant, stage: str, value: Any) -> Variant:
    if stage == "instances x threads":
        return dataclasses.replace(v, instances=value[0], threads=value[1])
    if stage == "max_queue_delay_us":
        return dataclasses.replace(v, delay_us=value)
    return dataclasses.replace(v, preferred=value)


@dataclass
class Sweep:
    """What a sweep measured: every variant (``rows``), the alternating confirmation, the spec's
    variant and the best measurement."""

    rows: list[Measurement]
    confirm: list[Measurement]
    current: Variant
    best: Measurement


def _sweep_lines(
    opt: argparse.Namespace, model: ServedModel, info: dict[str, Any], weights: str, s: Sweep, wall_s: float
) -> list[str]:
    """How the sweep ran, and one row per measured variant."""
    rows, current, best = s.rows, s.current, s.best
    load = (
        f"{opt.load}, concurrency {opt.concurrency}, {opt.rows} row(s) per request, {opt.seconds:g} s windows"
    )
    lows = ", ".join(map(str, opt.low_concurrency))
    lines = [
        f"# {model.name}: Triton configuration sweep ({info['model']}, {info['cpus']} CPUs)",
        "",
        *report.run_lines(info, wall_s),
        f"- **Weights**: {weights}",
        report.bullet(report.GPU_LINE),
        f"- **Load**: {load}; every variant also at low load (concurrency {lows or 'none'}); "
        "Triton restarted per variant.",
        f"- **Current spec**: {current}",
        "- **Search**: greedy, one knob family per stage, each stage starting from the best so far; "
        f"ties (within {TIE:.0%} images/s at concurrency {opt.concurrency}) go to the lower p99 at "
        f"concurrency {lows or '-'}, then under load.",
        "",
    ]
    cells = []
    for m in rows:
        v = m.variant
        pref = ", ".join(map(str, v.preferred)) or "none"
        mark = " **best**" if m is best else (" (current)" if v == current else "")
        cells.append(
            (m.stage, v.instances, v.threads, v.delay_us, f"[{pref}]", f"{m.images_per_s:,.1f}{mark}",
             f"{m.p50_ms:,.0f}", f"{m.p99_ms:,.0f}", *_low(m), f"{m.server_cores:.2f}",
             f"{m.client_cores:.2f}", f"{m.foreign_cores:.2f}", m.failures, m.note)
        )  # fmt: skip
    return lines + table(SWEEP_COLUMNS, cells, "lrrrl" + "r" * 10 + "l")


SWEEP_COLUMNS = (
    "stage", "instances", "threads", "max_queue_delay µs", "preferred", "images/s", "p50 ms", "p99 ms",
    "low-load images/s", "low-load p50 ms", "low-load p99 ms", "server CPU (cores)", "client CPU (cores)",
    "other jobs' CPU", "failures", "note",
)  # fmt: skip
CONFIRM_COLUMNS = (
    "config", "concurrency", "images/s", "p50 ms", "p99 ms", "server CPU (cores)", "other jobs' CPU", "note",
)  # fmt: skip


def _confirmation_lines(confirm: list[Measurement], b: Variant, current: Variant) -> list[str]:
    """Best (``b``) vs current, alternating, and the mean difference per concurrency."""
    cells = [
        (f"{'best' if m.variant == b else 'current'}: {m.variant}", m.concurrency, f"{m.images_per_s:,.1f}",
         f"{m.p50_ms:,.1f}", f"{m.p99_ms:,.1f}", f"{m.server_cores:.2f}", f"{m.foreign_cores:.2f}", m.note)
        for m in confirm
    ]  # fmt: skip
    lines = [
        "",
        "## Confirmation: best vs current, alternating",
        "",
        *table(CONFIRM_COLUMNS, cells, "lrrrrrrl"),
    ]
    lines += ["", "## Recommendation", ""]

    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else math.nan

    for c in sorted({m.concurrency for m in confirm}, reverse=True):
        win = [m for m in confirm if m.variant == b and m.concurrency == c]
        cur = [m for m in confirm if m.variant == current and m.concurrency == c]
        if b == current or not win or not cur:
            continue
        w_ips, c_ips = mean([m.images_per_s for m in win]), mean([m.images_per_s for m in cur])
        lines.append(
            f"- c={c}: {w_ips:,.1f} vs {c_ips:,.1f} images/s ({w_ips / c_ips - 1:+.0%}); "
            f"p50 {mean([m.p50_ms for m in win]):,.1f} vs {mean([m.p50_ms for m in cur]):,.1f} ms; "
            f"p99 {mean([m.p99_ms for m in win]):,.1f} vs {mean([m.p99_ms for m in cur]):,.1f} ms "
            f"(best vs current, mean of {len(win)})."
        )
    return lines


def render(
    opt: argparse.Namespace, model: ServedModel, info: dict[str, Any], weights: str, s: Sweep, wall_s: float
) -> str:
    lines = _sweep_lines(opt, model, info, weights, s, wall_s)
    b, current = s.best.variant, s.current
    lines += _confirmation_lines(s.confirm, b, current)
    lines += ["", f"Best: **{b}**{' (the current spec)' if b == current else ''}."]
    lines += [
        "",
        f"In the `ServedModel` of {model.name} (`ecomgen/specs/`):",
        "",
        "```python",
        f"    batching=Batching(preferred_batch_sizes={b.preferred!r}, max_queue_delay_us={b.delay_us}),",
        f"    cpu_instances={b.instances},",
        f"    cpu_threads={b.threads},",
        "```",
    ]
    if not model.fuse_on_cpu and model.networks:
        lines += [
            "",
            "(an ensemble: the sweep gave every network step the same batching; set it per NetworkSpec)",
        ]
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=REGISTRY.names(), default=harness.DEFAULT_MODEL)
    p.add_argument("--load", choices=["perf_analyzer", "locust"], default="perf_analyzer")
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--rows", type=int, default=1, help="rows (images) per request")
    p.add_argument("--seconds", type=float, default=5.0, help="measurement window")
    p.add_argument(
        "--instances-threads",
        nargs="+",
        default=["1x2", "1x1", "2x1", "2x2", "3x1"],
        help="INSTANCESxTHREADS",
    )
    p.add_argument("--delays", type=int, nargs="+", default=[0, 500, 2000, 5000, 10000, 20000])
    p.add_argument(
        "--preferred", nargs="+", default=["", "8", "16", "32", "16,32,64", "32,64", "64"], help="comma lists"
    )
    p.add_argument("--confirm", type=int, default=2, help="alternating re-measurements of best vs current")
    p.add_argument(
        "--low-concurrency",
        type=int,
        nargs="*",
        default=[1],
        help="also measure at these concurrencies (queue delay shows up as latency at low load)",
    )
    p.add_argument("--quiet-timeout", type=float, default=300.0, help="max seconds to wait for other jobs")
    harness.add_arguments(p, quiet=False)
    return p.parse_args(argv)


def sweep(opt: argparse.Namespace, base: ServedModel, h: harness.Harness) -> Sweep:
    """The greedy search, stage by stage, then best and current re-measured alternately."""
    current = best_variant = Variant.of(base)
    concurrencies = [opt.concurrency, *opt.low_concurrency]
    rows: list[Measurement] = []
    plan = stages(opt, base.contract.max_batch_size)
    bar = tqdm(total=sum(len(values) for _, values in plan) + 2 * opt.confirm, desc="tune", unit="config")
    for stage, values in plan:
        stage_rows = []
        for value in values:
            v = apply(best_variant, stage, value)
            # Reuse a measurement of the very same variant from an earlier stage.
            done = next((m for m in rows if m.variant == v), None)
            if done is not None:
                m = dataclasses.replace(done, stage=stage, note=f"reused from {done.stage}")
            else:
                m, *low = measure(v, base, h, stage, opt, concurrencies)
                m.low = low[0] if low else None
            bar.set_postfix_str(f"{v}: {m.images_per_s:,.0f} img/s")
            bar.update()
            stage_rows.append(m)
        rows.extend(stage_rows)
        best_variant = best_of(stage_rows).variant
    confirm: list[Measurement] = []
    for _ in range(opt.confirm):
        for v in (best_variant, current):
            confirm += measure(v, base, h, "confirm", opt, concurrencies)
            bar.update()
    bar.close()
    return Sweep(rows, confirm, current, next(m for m in rows if m.variant == best_variant))


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    started = time.monotonic()
    base = harness.with_runtime(REGISTRY[opt.model], opt.cpu_runtime)
    if base.contract.batched:
        opt.rows = min(opt.rows, base.contract.max_batch_size)
    with harness.Harness([base], opt.weights, servers=0, prefix="ecomgen-tune-") as h:
        s = sweep(opt, base, h)
    info, label = h.machine, h.weights_label
    kind = "tune" if base.name == harness.DEFAULT_MODEL else f"{base.name}-tune"
    stem = opt.out / report.result_stem(kind, info)
    stem.parent.mkdir(parents=True, exist_ok=True)
    md = render(opt, base, info, label, s, time.monotonic() - started)
    stem.with_suffix(".md").write_text(md)
    report.write_json(
        stem.with_suffix(".json"),
        {
            "command": report.command_line(),
            "model": base.name,
            "machine": info,
            "weights": label,
            "current": asdict(s.current),
            "best": asdict(s.best.variant),
            "rows": [asdict(m) for m in s.rows],
            "confirm": [asdict(m) for m in s.confirm],
        },
    )
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
