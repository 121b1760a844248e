"""The per-request cost of the hot path: single-row serving against many-row serving and offline.

For a batched model (default ``product_gan``), in one run on one machine:

1. offline ceilings: the served runner alone (network only, each batch size, the best is the
   ceiling) and the whole served pipeline through ``run_batch`` (checks, latents, network, uint8),
   both on the runtime this host's calibration chose;
2. served, through the embedded tritonserver and perf_analyzer over gRPC: 1 row per request at
   concurrency 1 and ``--concurrency`` (32), and ``max_batch_size`` rows per request;
3. where the CPU goes in each served run: cores of perf_analyzer, of tritonserver (gRPC frontend,
   core, batcher) and of the Python stubs, per row; Triton's statistics (rows per execution);
4. a py-spy profile of the Python stub during the single-row run: its main thread's wall time by
   phase (reading requests, checks, latents, network, uint8, responses; outside ``execute``).

Targets (issue 10, item 6): single-row serving at c=32 >= 80% of many-row serving, and >= 80% of
the offline ceiling of the chosen runtime.

    python -m benchmarks.hotpath                          # product_gan, ~4 min
    python -m benchmarks.hotpath --smoke --out /tmp/hp    # seconds long, tiny weights
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import re
import shutil
import subprocess
import sys
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from benchmarks import harness, perf_analyzer, report
from benchmarks.ensemble import model_stats, rows_per_execution
from benchmarks.report import bullet, fmt, table
from benchmarks.roofline import WAIT_QUIET, pipeline_sweep, served_sweep
from ecomgen.launcher import STUB_ROLE, LoadMeter, ProcessTree
from ecomgen.registry import REGISTRY
from ecomgen.spec import ServedModel

TARGET = 0.80

# Phases of the stub's main thread, by the innermost marker frame of a py-spy stack (first match
# from the leaf). Frames are "function (file)" as py-spy writes them.
PHASES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("network (runtime infer)", ("runners.py",)),
    ("latents (Philox) + one-hot", ("latents_from_seeds", "one_hot", "philox")),
    ("uint8 conversion", ("convert.py",)),
    ("read requests (pb_utils)", ("_read ",)),
    ("per-request checks", ("check_inputs", "_parse ", "check_deadline")),
    ("output checks + split", ("_check_outputs", "_compute ")),
    ("batch assembly", ("run_batch",)),
    ("responses (pb_utils)", ("execute ",)),
)
OUTSIDE = "outside execute (stub IPC, waiting for work)"


@dataclass
class Served:
    scenario: str
    concurrency: int
    rows_per_request: int
    images_per_s: float
    p50_ms: float
    p99_ms: float
    rows_per_execution: float
    cores: dict[str, float]  # process group -> average cores during the run
    cpu_us_per_row: dict[str, float]
    foreign_cores: float
    windows: list[float]
    command: str


# --- CPU accounting by process group --------------------------------------------------


def _groups(tree: ProcessTree) -> dict[str, float]:
    """CPU seconds so far of tritonserver and of the Python stubs (every model instance together)."""
    sample = tree.sample(memory=False)
    return {
        "tritonserver": sample.roles_cpu.get("tritonserver", 0.0),
        "python stubs": sum(sample.cpu_by_role(STUB_ROLE).values()),
    }


def served_run(
    url: str, server_pid: int, model: str, scenario: str, concurrency: int, rows: int, opt: argparse.Namespace
) -> Served:
    if opt.wait_quiet:
        harness.wait_until_quiet(quiet_s=2.0, timeout_s=300.0)
    tree, meter = ProcessTree(server_pid, memory=False), LoadMeter()
    with grpcclient.InferenceServerClient(url) as client:
        before = model_stats(client)
        cpu0, load0 = _groups(tree), meter.read()
        result = perf_analyzer.run(
            url, concurrency, rows, model, measurement_ms=opt.measurement_ms, windows=opt.windows
        )
        cpu1, load1 = _groups(tree), meter.read()
        after = model_stats(client)
    wall = load1.time - load0.time
    cores = {k: (cpu1[k] - cpu0[k]) / wall for k in cpu0}
    cores["perf_analyzer (client)"] = result.client_cores
    # Rows done over the whole perf_analyzer run (warm-up included), from Triton's own counters.
    rows_done = after[model]["rows"][0] - before[model]["rows"][0]
    per_row = {k: c * wall / rows_done * 1e6 for k, c in cores.items()} if rows_done else {}
    batching = rows_per_execution(before, after, model)
    return Served(
        scenario, concurrency, rows, result.images_per_s, result.p50_ms, result.p99_ms, batching, cores,
        per_row, load0.foreign_cores(load1), result.window_images_per_s, result.command,
    )  # fmt: skip


# --- py-spy ---------------------------------------------------------------------------


def py_spy() -> str | None:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    return found if Path(found).exists() else None


def profile_stub(
    url: str, server_pid: int, model: str, concurrency: int, seconds: float, rate: int, raw: Path
) -> dict[str, Any]:
    """Load at ``concurrency`` single-row requests while py-spy samples every stub's main thread.

    One py-spy per stub (one per model instance), at the same time; their raw stacks are merged
    into ``raw``, so the shares are of all stubs' main-thread wall time together.
    """
    exe = py_spy()
    if exe is None:
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    stubs = ProcessTree(server_pid).sample(memory=False).pids(STUB_ROLE)
    if not stubs:
        return {"skipped": "no Python stub found"}
    load = threading.Thread(
        target=perf_analyzer.run,
        args=(url, concurrency, 1, model),
        kwargs={"measurement_ms": int((seconds + 6) * 1000 / 3), "windows": 3},
        daemon=True,
    )
    load.start()
    time.sleep(3.0)  # past perf_analyzer's start-up
    shown = ["py-spy", "record", "--pid", "STUB", "--duration", str(int(seconds)), "--rate", str(rate)]
    shown += ["--idle", "--format", "raw", "--nonblocking", "--output", raw.name]
    parts = [raw.with_name(f"{raw.name}.{i}") for i in range(len(stubs))]
    procs = [
        subprocess.Popen(
            [exe, *shown[1:3], str(stub), *shown[4:-1], str(part)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for stub, part in zip(stubs, parts, strict=True)
    ]
    errors = [proc.communicate(timeout=seconds + 60)[1] for proc in procs]
    load.join(timeout=seconds + 120)
    failed = [(proc.returncode, err) for proc, err, part in zip(procs, errors, parts, strict=True) if
              proc.returncode != 0 or not part.exists()]  # fmt: skip
    if failed:
        return {"skipped": f"py-spy failed (exit {failed[0][0]}): {failed[0][1].strip()[-500:]}"}
    raw.write_text("".join(part.read_text() for part in parts))
    for part in parts:
        part.unlink()
    command = " ".join(shown) + (f" (one per stub: {len(stubs)} instances)" if len(stubs) > 1 else "")
    return {"command": command, "stubs": len(stubs), **phases(raw)}


def main_thread_stacks(raw: Path) -> list[tuple[list[str], int]]:
    """(frames from the root, samples) of each stack in py-spy's raw output, other Python threads
    (rooted in ``Thread._bootstrap``) left out; an empty list is the stub's C++ side."""
    out = []
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if n.isdigit() and not stack.startswith("Thread._bootstrap"):
            out.append(([f for f in stack.split(";") if f.strip()], int(n)))
    return out


def _frame_name(frame: str) -> str:
    """A frame without its line number: one box per function in a file."""
    return re.sub(r":\d+\)$", ")", frame)


def phases(raw: Path) -> dict[str, Any]:
    """Samples of the stub's main thread by phase (``--idle``: waiting counts too).

    An empty stack is the main thread in the stub's C++ code, outside ``execute`` (IPC with the
    server, waiting for the next batch); stacks rooted in ``Thread._bootstrap`` are other Python
    threads and are left out.
    """
    counts: collections.Counter[str] = collections.Counter()
    leaves: collections.Counter[str] = collections.Counter()
    for frames, n in main_thread_stacks(raw):
        counts[_phase(frames)] += n
        leaves[_frame_name(frames[-1]) if frames else OUTSIDE] += n
    total = sum(counts.values()) or 1
    return {
        "samples": sum(counts.values()),
        "phases": {k: counts[k] / total for k in [*(p for p, _ in PHASES), OUTSIDE] if counts[k]},
        "top_frames": [(f, c / total) for f, c in leaves.most_common(12)],
    }


def _phase(frames: list[str]) -> str:
    if not any("execute" in f for f in frames):
        return OUTSIDE
    for frame in reversed(frames):
        for name, markers in PHASES:
            if any(m in frame for m in markers):
                return name
    return OUTSIDE


# --- run ------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    batched = [m.name for m in REGISTRY if m.contract.batched and m.networks]
    p.add_argument("--model", choices=batched, default="product_gan")
    p.add_argument("--concurrency", type=int, default=32, help="single-row load (default %(default)s)")
    p.add_argument("--big-concurrency", type=int, nargs="+", default=[2, 4], help="many-row load; best kept")
    p.add_argument("--measurement-ms", type=int, default=5000, help="perf_analyzer window")
    p.add_argument("--windows", type=int, default=3, help="perf_analyzer windows, averaged (>= 3)")
    p.add_argument("--offline-seconds", type=float, default=1.5, help="timing window, offline ceilings")
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of the offline timings")
    p.add_argument("--profile-seconds", type=float, default=15.0, help="py-spy duration; 0: no profile")
    p.add_argument("--profile-rate", type=int, default=250, help="py-spy samples per second")
    harness.add_arguments(p, smoke="tiny weights, short windows (CI)")
    short = {"measurement_ms": 500, "rounds": 1, "offline_seconds": 0.3, "profile_seconds": 2.0}
    return harness.parse_args(p, argv, **short, big_concurrency=[2])


def offline(model: ServedModel, h: harness.Harness, opt: argparse.Namespace) -> dict[str, Any]:
    """Offline ceilings on the served runtime: the network alone, and the fused served pipeline."""
    top = model.contract.max_batch_size
    batches = sorted({1, 8, 16, 32, top} - {b for b in (8, 16, 32) if b > top})
    nets: dict[str, dict[str, Any]] = {}
    for net in model.networks:
        runtime = h.runtimes[net.name].split(" ", 1)[0]
        sweep = served_sweep(
            net,
            h.onnx_dir / f"{net.name}.onnx",
            runtime,
            model.cpu_threads,
            batches,
            opt.offline_seconds,
            opt.rounds,
        )
        best = max(sweep, key=lambda b: sweep[b]["items_per_s"])
        nets[net.name] = {
            "runtime": runtime,
            "sweep": sweep,
            "best_batch": best,
            "ceiling": sweep[best]["items_per_s"],
        }
    network_ceiling = 1.0 / sum(1.0 / n["ceiling"] for n in nets.values())
    fused = dataclasses.replace(model, fuse_on_cpu=True)
    repository, _ = h.repository_for([fused], "pipeline")
    pipe = pipeline_sweep(fused, repository, batches, opt.offline_seconds, opt.rounds)
    best = max(pipe, key=lambda b: pipe[b]["rows_per_s"])
    return {
        "networks": nets,
        "network_ceiling": network_ceiling,
        "pipeline": pipe,
        "pipeline_ceiling": pipe[best]["rows_per_s"],
        "pipeline_best_batch": best,
    }


def stem_for(opt: argparse.Namespace, r: dict[str, Any]) -> Path:
    return opt.out / report.result_stem(f"{r['model']}-hotpath", r["machine"])


def served_runs(
    h: harness.Harness, model: ServedModel, opt: argparse.Namespace, out: dict[str, Any]
) -> list[Served]:
    """The served scenarios through one server, then (``--profile-seconds``) the py-spy profile."""
    top = model.contract.max_batch_size
    served: list[Served] = []
    with h.serve(log_name="triton.log") as server:
        url, pid = server.grpc_url, server.triton_pid
        perf_analyzer.run(url, 4, 1, model.name, measurement_ms=500, windows=3)  # warm-up
        served.append(served_run(url, pid, model.name, "single", 1, 1, opt))
        served.append(served_run(url, pid, model.name, "single", opt.concurrency, 1, opt))
        for c in opt.big_concurrency:
            served.append(served_run(url, pid, model.name, f"batch{top}", c, top, opt))
        if opt.profile_seconds > 0:
            raw = stem_for(opt, out).with_name(stem_for(opt, out).name + "-pyspy.txt")
            raw.parent.mkdir(parents=True, exist_ok=True)
            out["profile"] = profile_stub(
                url, pid, model.name, opt.concurrency, opt.profile_seconds, opt.profile_rate, raw
            )
            out["profile"]["raw"] = raw.name
            if raw.exists():
                flame = flame_graph(
                    raw,
                    raw.with_name(raw.stem + "-flame.png"),
                    title=(
                        f"{model.name}: stub main threads, single-row load at c={opt.concurrency} (py-spy)"
                    ),
                )
                out["profile"]["flame_graph"] = flame.name
    return served


def run(opt: argparse.Namespace) -> dict[str, Any]:
    WAIT_QUIET[0] = opt.wait_quiet
    model = harness.with_runtime(REGISTRY[opt.model], opt.cpu_runtime)
    top = model.contract.max_batch_size
    with harness.Harness([model], opt.weights, servers=0, prefix="ecomgen-hotpath-") as h:
        out: dict[str, Any] = {
            **h.facts(),
            "model": model.name,
            "instances": model.served_cpu_instances,
            "threads": model.cpu_threads,
            "runtimes": h.runtimes,
        }
        out["offline"] = offline(model, h, opt)
        served = served_runs(h, model, opt, out)
        out["served"] = [asdict(s) for s in served]
    single = next(s for s in served if s.scenario == "single" and s.concurrency == opt.concurrency)
    big = max((s for s in served if s.rows_per_request == top), key=lambda s: s.images_per_s)
    out["ratios"] = {
        "single_vs_many_rows": single.images_per_s / big.images_per_s,
        "single_vs_pipeline_ceiling": single.images_per_s / out["offline"]["pipeline_ceiling"],
        "single_vs_network_ceiling": single.images_per_s / out["offline"]["network_ceiling"],
        "many_rows_vs_network_ceiling": big.images_per_s / out["offline"]["network_ceiling"],
    }
    return out


# --- report ---------------------------------------------------------------------------


def _verdict(x: float) -> str:
    return f"**{x:.0%}** ({'meets' if x >= TARGET else 'below'} the {TARGET:.0%} target)"


def render(r: dict[str, Any], plot_name: str | None) -> str:
    off, top = r["offline"], max(s["rows_per_request"] for s in r["served"])
    nets = ", ".join(f"{k}: {v['runtime']}" for k, v in off["networks"].items())
    lines = [
        f"# Hot path: {r['model']}, one row per request vs {top} rows and offline",
        "",
        bullet(f"**Command**: `{r['command']}`"),
        bullet(f"**Machine**: {report.machine_line(r['machine'])}; no GPU"),
        bullet(f"**Date**: {r['date']}; **weights**: {r['weights']}"),
        bullet(
            f"**Served as**: one Python model (cpu target, fused steps), {r['instances']} instance(s) x "
            f"{r['threads']} threads; runtime from this host's calibration: {nets}"
        ),
        bullet("**Load**: perf_analyzer 2.51 over gRPC on the same machine (its CPU is counted below)"),
        "",
        "## Verdict",
        "",
        *table(("ratio", "value"), _verdict_rows(r, top)),
        "",
        "## Offline ceilings (same run)",
        "",
    ]
    ceilings = [
        (f"{name} on {n['runtime']} (network only)", b, fmt(v["items_per_s"]))
        for name, n in off["networks"].items()
        for b, v in n["sweep"].items()
    ]
    ceilings += [
        ("served pipeline through `run_batch`", b, fmt(v["rows_per_s"])) for b, v in off["pipeline"].items()
    ]
    lines += [*table(("what", "batch", "images/s"), ceilings, "lrr"), "", "## Served", ""]
    lines += table(SERVED_COLUMNS, [_served_row(s) for s in r["served"]], "rrrrrrllr")
    lines += ["", *_profile_lines(r.get("profile"))]
    if plot_name:
        lines += ["", f"![where the CPU goes]({plot_name})"]
    return "\n".join(lines) + "\n"


SERVED_COLUMNS = (
    "rows/request", "concurrency", "images/s", "p50 ms", "p99 ms", "rows per execution",
    "cores: client / tritonserver / stub", "CPU µs per image: client / tritonserver / stub",
    "foreign load (cores)",
)  # fmt: skip
PROCESS_GROUPS = ("perf_analyzer (client)", "tritonserver", "python stubs")


def _verdict_rows(r: dict[str, Any], top: int) -> list[tuple[str, str]]:
    ratios = r["ratios"]
    return [
        (f"single-row serving at c={_single(r)['concurrency']} / {top}-row serving",
         _verdict(ratios["single_vs_many_rows"])),
        ("single-row serving / offline ceiling of the served pipeline (checks, latents, network, uint8)",
         _verdict(ratios["single_vs_pipeline_ceiling"])),
        ("single-row serving / offline ceiling of the network alone on the chosen runtime",
         _verdict(ratios["single_vs_network_ceiling"])),
        (f"{top}-row serving / offline ceiling of the network alone",
         f"{ratios['many_rows_vs_network_ceiling']:.0%}"),
    ]  # fmt: skip


def _served_row(s: dict[str, Any]) -> tuple[object, ...]:
    c, u = s["cores"], s["cpu_us_per_row"]
    return (
        s["rows_per_request"], s["concurrency"], fmt(s["images_per_s"]), fmt(s["p50_ms"]), fmt(s["p99_ms"]),
        fmt(s["rows_per_execution"]), " / ".join(fmt(c.get(k), 2) for k in PROCESS_GROUPS),
        " / ".join(fmt(u.get(k), 0) for k in PROCESS_GROUPS), f"{s['foreign_cores']:.2f}",
    )  # fmt: skip


def _single(r: dict[str, Any]) -> dict[str, Any]:
    return max((s for s in r["served"] if s["rows_per_request"] == 1), key=lambda s: s["concurrency"])


def _profile_lines(p: dict[str, Any] | None) -> list[str]:
    if not p:
        return []
    if "skipped" in p:
        return ["## Profile", "", f"Not profiled: {p['skipped']}"]
    lines = [
        "## Where the stub's time goes (py-spy, single-row load)",
        "",
        f"`{p['command']}`: {p['samples']} samples of the stubs' main threads, waiting included "
        f"(`--idle`); an empty stack is its C++ side. Raw stacks: `{p['raw']}`.",
        "",
        *([f"![flame graph]({p['flame_graph']})", ""] if p.get("flame_graph") else []),
        "| phase of the stub's main thread | share of wall time |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.1%} |" for k, v in p["phases"].items()]
    lines += ["", "| innermost frame | share |", "|---|---:|"]
    lines += [f"| `{f}` | {v:.1%} |" for f, v in p["top_frames"]]
    return lines


def flame_graph(raw: Path, path: Path, max_depth: int = 28, title: str = "") -> Path:
    """A flame graph of py-spy's raw (collapsed) stacks: x is the share of samples, y the stack
    depth from the root; a frame is labelled where its box is wide enough."""
    root: dict[str, Any] = {"n": 0, "kids": {}}
    for frames, n in main_thread_stacks(raw):
        node = root
        node["n"] += n
        for f in (frames or [OUTSIDE])[:max_depth]:
            node = node["kids"].setdefault(_frame_name(f), {"n": 0, "kids": {}})
            node["n"] += n
    total = root["n"] or 1
    fig = report.pyplot().figure(figsize=(16, 9))
    ax = fig.add_subplot(111)
    cmap = report.pyplot().get_cmap("YlOrRd")

    def draw(node: dict[str, Any], x: float, depth: int) -> None:
        for name, kid in sorted(node["kids"].items(), key=lambda kv: -kv[1]["n"]):
            w = kid["n"] / total
            ax.add_patch(
                report.pyplot().Rectangle(
                    (x, depth),
                    w,
                    0.95,
                    facecolor=cmap(0.25 + 0.5 * (zlib.crc32(name.encode()) % 97) / 97),
                    lw=0.3,
                    edgecolor="white",
                )
            )
            if w > 0.035:
                label = name.split(" (")[0]
                ax.text(x + 0.003, depth + 0.45, f"{label} {w:.0%}", fontsize=6, va="center", clip_on=True)
            draw(kid, x, depth + 1)
            x += w

    draw(root, 0.0, 0)

    def height(node: dict[str, Any]) -> int:
        return 1 + max((height(k) for k in node["kids"].values()), default=0)

    depth = height(root) - 1
    ax.set_xlim(0, 1)
    ax.set_ylim(depth + 0.5, 0)  # the root at the top (an icicle), frames deeper below
    ax.set_xlabel("share of the stubs' main-thread samples (waiting included)")
    ax.set_ylabel("stack depth")
    ax.set_title(title or f"py-spy flame graph: {raw.name}")
    return report.save_figure(fig, path)


def plot(r: dict[str, Any], path: Path) -> Path:
    keys = PROCESS_GROUPS
    served = r["served"]
    fig, axes = report.pyplot().subplots(1, 2, figsize=(12, 4.2))
    labels = [f"{s['rows_per_request']} row(s)\nc={s['concurrency']}" for s in served]
    bottom = [0.0] * len(served)
    for k in keys:
        vals = [s["cpu_us_per_row"].get(k, 0.0) for s in served]
        axes[0].bar(labels, vals, bottom=bottom, label=k)
        bottom = [a + b for a, b in zip(bottom, vals, strict=True)]
    axes[0].set_ylabel("CPU µs per image")
    axes[0].set_title(f"{r['model']}: CPU per image by process")
    axes[0].legend(fontsize=8)
    prof = (r.get("profile") or {}).get("phases")
    if prof:
        axes[1].barh(list(prof), [v * 100 for v in prof.values()])
        axes[1].invert_yaxis()
        axes[1].set_xlabel("% of the stub main thread's wall time")
        axes[1].set_title("py-spy, single-row load")
    else:
        axes[1].axis("off")
    return report.save_figure(fig, path)


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    r = run(opt)
    stem = stem_for(opt, r)
    stem.parent.mkdir(parents=True, exist_ok=True)
    png = plot(r, stem.with_suffix(".png"))
    md = stem.with_suffix(".md")
    md.write_text(render(r, png.name))
    report.write_json(stem.with_suffix(".json"), r)
    print(md.read_text())
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
