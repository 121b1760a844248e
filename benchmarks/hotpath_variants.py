"""Which Triton settings make single-row product_gan requests cheap: one server per variant.

Each variant edits the generated ``config.pbtxt`` of the fused ``product_gan`` (through Triton's
protobuf schema), starts the embedded server on it and runs perf_analyzer (gRPC) with single-row
requests at concurrency 1 and 32, synchronous and ``--async``. The spec's values are the
``spec`` row; the others change one or two knobs from the settings before this comparison
(1 instance x 2 threads, 2 ms queue delay, queue of 128 with a 5 s default timeout).

    python -m benchmarks.hotpath_variants      # ~12 min; results/<date>-<cpu>-product_gan-hotpath-variants.md
    python -m benchmarks.hotpath_variants --variants before,no_policy --seconds 1 --out /tmp/b
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from benchmarks import harness, perf_analyzer, report
from benchmarks.report import bullet, table
from ecomgen.launcher import LaunchError

MODEL = "product_gan"
Edit = Callable[[mc.ModelConfig], None]


def _before(c: mc.ModelConfig) -> None:
    """The settings before this comparison."""
    c.instance_group[0].count = 1
    c.dynamic_batching.max_queue_delay_microseconds = 2000
    c.dynamic_batching.default_queue_policy.default_timeout_microseconds = 5_000_000


def _with(*edits: Edit) -> Edit:
    def edit(c: mc.ModelConfig) -> None:
        _before(c)
        for e in edits:
            e(c)

    return edit


def _no_delay(c: mc.ModelConfig) -> None:
    c.dynamic_batching.max_queue_delay_microseconds = 0


def _no_policy(c: mc.ModelConfig) -> None:
    c.dynamic_batching.ClearField("default_queue_policy")


def _no_default_timeout(c: mc.ModelConfig) -> None:
    c.dynamic_batching.default_queue_policy.ClearField("default_timeout_microseconds")


def _two_instances(c: mc.ModelConfig) -> None:
    c.instance_group[0].count = 2


def _one_thread(c: mc.ModelConfig) -> None:
    c.parameters["threads"].string_value = "1"


def _on_spec(*edits: Edit) -> Edit:
    """Knobs changed on top of the spec's own config (the shipped settings), not the old ones."""

    def edit(c: mc.ModelConfig) -> None:
        for e in edits:
            e(c)

    return edit


def _delay(us: int) -> Edit:
    def edit(c: mc.ModelConfig) -> None:
        c.dynamic_batching.max_queue_delay_microseconds = us

    return edit


def _one_instance(c: mc.ModelConfig) -> None:
    c.instance_group[0].count = 1


def _preferred(*sizes: int) -> Edit:
    def edit(c: mc.ModelConfig) -> None:
        del c.dynamic_batching.preferred_batch_size[:]
        c.dynamic_batching.preferred_batch_size.extend(sizes)

    return edit


VARIANTS: dict[str, Edit] = {
    "spec": lambda c: None,
    "before": _before,
    "no_delay": _with(_no_delay),
    "no_policy": _with(_no_policy),
    "no_default_timeout": _with(_no_default_timeout),
    "2_instances": _with(_two_instances),
    "2_instances_x_1_thread": _with(_two_instances, _one_thread),
    "no_policy+no_delay": _with(_no_policy, _no_delay),
    "no_default_timeout+no_delay": _with(_no_default_timeout, _no_delay),
    "no_default_timeout+2_instances": _with(_no_default_timeout, _two_instances),
    "no_default_timeout+no_delay+2_instances": _with(_no_default_timeout, _no_delay, _two_instances),
    # This round (issue 21.8), each on top of the shipped spec:
    "spec+delay_250us": _on_spec(_delay(250)),
    "spec+delay_1ms": _on_spec(_delay(1000)),
    "spec+1_instance": _on_spec(_one_instance),
    "spec+1_instance+delay_1ms": _on_spec(_one_instance, _delay(1000)),
    "spec+preferred_16_32": _on_spec(_preferred(16, 32)),
    "spec+1_thread": _on_spec(_one_thread),
}


def measure(h: harness.Harness, name: str, edit: Edit, opt: argparse.Namespace) -> dict[str, Any]:
    path = h.repository / MODEL / "config.pbtxt"
    original = path.read_text()
    config = text_format.Parse(original, mc.ModelConfig())
    edit(config)
    path.write_text(text_format.MessageToString(config))
    row: dict[str, Any] = {"variant": name}
    try:
        with h.serve(log_name="triton.log") as server:
            url = server.grpc_url
            perf_analyzer.run(url, 4, 1, MODEL, measurement_ms=500, windows=3)  # warm-up
            for label, conc, extra in (("c1", 1, ()), ("c32", 32, ()), ("c32_async", 32, ("--async",))):
                if opt.wait_quiet:
                    harness.wait_until_quiet(quiet_s=2.0, timeout_s=300.0)
                r = perf_analyzer.run(
                    url, conc, 1, MODEL, measurement_ms=int(opt.seconds * 1000), windows=3, extra_args=extra
                )
                row[label] = {"images_per_s": r.images_per_s, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms}
    except (perf_analyzer.PerfAnalyzerError, OSError, TimeoutError, LaunchError) as e:
        row["error"] = f"{type(e).__name__}: {str(e).splitlines()[-1][:200]}"
    finally:
        path.write_text(original)
    print(row, flush=True)
    return row


COLUMNS = (
    "variant", "c=1 images/s", "c=1 p50 / p99 ms", "c=32 images/s", "c=32 p50 / p99 ms",
    "c=32 async images/s", "async p99 ms",
)  # fmt: skip


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Hot path: Triton settings for single-row product_gan requests",
        "",
        bullet(f"**Command**: `{r['command']}`"),
        bullet(f"**Machine**: {report.machine_line(r['machine'])}; no GPU"),
        bullet(f"**Date**: {r['date']}; **weights**: {r['weights']}"),
        bullet(
            f"**Load**: perf_analyzer 2.51 over gRPC, single-row requests, 3 windows of {r['seconds']:g} s "
            "each; sync (one thread per request in flight) and `--async`"
        ),
        "",
    ]
    rows: list[tuple[object, ...] | str] = []
    for row in r["rows"]:
        if "error" in row:
            rows.append(f"| {row['variant']} | {row['error']} | | | | | |")
            continue
        a, b, c = row["c1"], row["c32"], row["c32_async"]
        rows.append(
            (row["variant"], f"{a['images_per_s']:.0f}", f"{a['p50_ms']:.1f} / {a['p99_ms']:.1f}",
             f"{b['images_per_s']:.0f}", f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f}", f"{c['images_per_s']:.0f}",
             f"{c['p99_ms']:.1f}")
        )  # fmt: skip
    lines += table(COLUMNS, rows, "lrrrrrr")
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names (+ joins knobs)")
    p.add_argument("--seconds", type=float, default=3.0, help="perf_analyzer window")
    harness.add_arguments(p, runtime=False)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    names = [n.strip() for n in opt.variants.split(",") if n.strip()]
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    with harness.Harness([MODEL], opt.weights, servers=0, prefix="ecomgen-hotpath-variants-") as h:
        result: dict[str, Any] = {
            **h.facts(),
            "seconds": opt.seconds,
            "rows": [measure(h, name, VARIANTS[name], opt) for name in names],
        }
    opt.out.mkdir(parents=True, exist_ok=True)
    stem = opt.out / report.result_stem(f"{MODEL}-hotpath-variants", result["machine"])
    report.write_json(stem.with_suffix(".json"), result)
    stem.with_suffix(".md").write_text(render(result))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
