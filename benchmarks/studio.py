"""The product studio's speed: cut-outs, studio images, the catalogue batch tool, and where one white
main image's time goes.

On one machine, through the launcher (``python -m ecomgen.launcher``, what ``ecomgen serve --no-build``
runs) serving ``product_cutout`` and ``product_scene`` from the chosen weights (the shipped
checkpoints by default), with C2PA signing on:

1. ``product_cutout``: images/s and latency at 512 and 1024 px (one shop photo per request, every
   request the same size), at concurrency 1 and 4;
2. ``product_scene``: p50/p99 latency at concurrency 1 and 8 for (a) a 2000x2000 ``white`` main image
   from a 1,000 px JPEG upload and (b) a 1080x1350 ``auto`` scene from the same photo;
3. the batch tool (``ecomgen_client.batch.run_batch``, assets ``cutout,white``) over a 200-SKU
   catalogue of the fixture photos enlarged to 1,000 px JPEGs, against one server, then against two
   servers on different ports of this machine (requests go round robin: the table shows the spread);
4. one white main image in this process (the served step as the cpu target runs it), each part
   timed where the handler calls it: decoding, the cut-out network, the matte's refinement, the x4
   network when it runs, composition, the watermark, encoding + XMP, C2PA signing.

Targets: a 2000x2000 white main image from a 1,000 px JPEG in p50 <= 350 ms at concurrency 1; the
batch tool >= 500 assets per minute (cut-out PNG + white main image) against one local server.

C2PA signing uses ``ECOMGEN_C2PA_CERT`` / ``ECOMGEN_C2PA_KEY`` when set, else a throwaway identity
made for the run (``tests/c2pa_certs.py``), as ``benchmarks.ads`` does.

    flock /tmp/ecomgen-cpu.lock python -m benchmarks.studio   # results/<date>-<cpu>-studio.{md,json,png}
    python -m benchmarks.studio --smoke --out /tmp/s          # tiny weights, short windows, 12 SKUs
"""

from __future__ import annotations

import argparse
import csv
import functools
import importlib
import io
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import harness, report
from benchmarks.ads import signing_identity
from benchmarks.payloads import product_jpeg
from benchmarks.report import bullet, fmt, table
from ecomgen_client import EcomgenError, ProductClient, ops
from ecomgen_client.batch import AssetPlan, run_batch

MODELS = ("product_cutout", "product_scene")
PHOTO_SIDE = 1000  # the shop photo's long side (px)
CUTOUT_SIDES = (512, 1024)
WHITE = ("white", "2000x2000")
SCENE = ("auto", "1080x1350")
TARGET_WHITE_P50_MS = 350.0
TARGET_ASSETS_PER_MIN = 500.0
# Where a white main image's time goes: the part a call counts as -> the function, where the handler
# (or the library it calls) finds it: "module[.Class]:attribute".
HOOKS = {
    "decode upload": "ecomgen.serving.handlers.studio:decode_uploads",
    "matte refinement (guided filter)": "ecomgen.serving.handlers.products:refine_alpha",
    "composition": "ecomgen.creative.studio:white_main_image",
    "labelling": "ecomgen.serving.handlers.studio:labelled",
    "watermark": "ecomgen.creative.provenance:embed_watermark",
    "C2PA signing": "ecomgen.creative.provenance.C2paSigner:sign",
}
TOTAL = "request (whole step, in process)"


# --- photos and a catalogue ----------------------------------------------------------------------------


def shop_photo(index: int, side: int = PHOTO_SIDE) -> bytes:
    """Fixture product photo ``index`` enlarged to ``side`` px on its long side (3:4), as a JPEG."""
    return product_jpeg(index, (side, side * 3 // 4))


def photo_array(side: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(shop_photo(0, side))).convert("RGB"))


def write_catalogue(folder: Path, rows: int) -> Path:
    """``rows`` SKUs, each with its own 1,000 px JPEG (the fixture photos, every other cycle mirrored)."""
    from PIL import Image, ImageOps

    (folder / "photos").mkdir(parents=True, exist_ok=True)
    with (folder / "catalogue.csv").open("w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["sku", "photo"])
        for i in range(rows):
            image: Image.Image = Image.open(io.BytesIO(shop_photo(i)))
            if (i // 11) % 2:
                image = ImageOps.mirror(image)
            name = f"photos/{i:04d}.jpg"
            image.save(folder / name, format="JPEG", quality=90)
            out.writerow([f"SKU-{i:04d}", name])
    return folder / "catalogue.csv"


# --- load ----------------------------------------------------------------------------------------------


def closed_loop(
    url: str, call: Callable[[ProductClient], object], concurrency: int, seconds: float
) -> dict[str, Any]:
    """``concurrency`` clients back to back for ``seconds`` (each sends at least one request)."""
    latencies: list[float] = []
    failures: list[str] = []
    deadline = time.monotonic() + seconds

    def user() -> None:
        with ProductClient(url, timeout_s=120, retries=0) as client:
            while True:
                start = time.perf_counter()
                try:
                    call(client)
                    latencies.append(time.perf_counter() - start)
                except EcomgenError as e:
                    failures.append(f"{type(e).__name__}: {str(e)[:200]}")
                if time.monotonic() >= deadline:
                    return

    started = time.perf_counter()
    users = [threading.Thread(target=user) for _ in range(concurrency)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1e3 if latencies else np.array([np.nan])
    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "failures": len(failures),
        "errors": sorted(set(failures))[:3],
        "per_s": len(latencies) / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
    }


def cutout_points(url: str, opt: argparse.Namespace, h: harness.Harness) -> list[dict[str, Any]]:
    points = []
    for side in CUTOUT_SIDES:
        photo = photo_array(side)
        with ProductClient(url, timeout_s=120) as client:
            client.cutout(photo)  # warm-up: this size's shapes
        call = functools.partial(ProductClient.cutout, image=photo)
        for c in opt.cutout_concurrency:
            h.quiet()
            point = closed_loop(url, call, c, opt.seconds)
            points.append({"size": f"{photo.shape[0]}x{photo.shape[1]}", **point})
    return points


def scene_points(url: str, opt: argparse.Namespace, h: harness.Harness) -> list[dict[str, Any]]:
    photo, points = shop_photo(0), []
    for scene, size in (WHITE, SCENE):

        def call(client: ProductClient, scene: str = scene, size: str = size) -> object:
            return client.product_scene(photo, scene=scene, format=size)

        with ProductClient(url, timeout_s=120) as client:
            call(client)  # warm-up
        for c in opt.scene_concurrency:
            h.quiet()
            points.append({"scene": scene, "format": size, **closed_loop(url, call, c, opt.seconds)})
    return points


def batch_run(urls: Sequence[str], catalogue: Path, out: Path, opt: argparse.Namespace) -> dict[str, Any]:
    summary = run_batch(
        catalogue, out, list(urls), AssetPlan.parse("cutout,white"), concurrency=opt.batch_concurrency,
        progress=False,
    )  # fmt: skip
    return {
        "servers": len(urls),
        "rows": summary.rows,
        "assets": summary.written,
        "failed": summary.failed,
        "seconds": summary.wall_s,
        "assets_per_s": summary.written / summary.wall_s if summary.wall_s else 0.0,
        "assets_per_min": summary.assets_per_minute,
        "per_endpoint": dict(summary.per_endpoint),
        "ok": summary.ok,
        # Why, when anything failed: the report shows the first few.
        "errors": [f"{f.sku} {','.join(f.assets)}: {f.reason}" for f in summary.failures[:5]]
        + [f"{b.sku}: {b.reason}" for b in summary.bad_rows[:5]],
    }


def batch_points(h: harness.Harness, opt: argparse.Namespace) -> list[dict[str, Any]]:
    """The batch tool against the harness's server, then against it and a second one."""
    catalogue = write_catalogue(h.tmp / "catalogue", opt.rows)
    h.quiet()
    points = [batch_run([h.url], catalogue, h.tmp / "batch-1", opt)]
    with h.serve(log_name="tritonserver-second.log") as second:
        h.quiet()
        points.append(batch_run([h.url, second.grpc_url], catalogue, h.tmp / "batch-2", opt))
    return points


# --- one white main image, in process ------------------------------------------------------------------


class PartTimer:
    """While active, every call to a hooked function (and each network the step runs) adds its time
    to the part it is counted as (``spent``: part -> seconds)."""

    def __init__(self, step: Any, hooks: Mapping[str, str]) -> None:
        self.step, self.hooks = step, hooks
        self.spent: dict[str, float] = {}
        self._undo: list[tuple[Any, str, Any]] = []

    def timed(self, fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent[part] = self.spent.get(part, 0.0) + time.perf_counter() - start

        return call

    def __enter__(self) -> PartTimer:
        for part, where in self.hooks.items():
            path, _, attr = where.partition(":")
            owner = _owner(path)
            self._undo.append((owner, attr, getattr(owner, attr)))
            setattr(owner, attr, self.timed(getattr(owner, attr), part))
        networks = self.step.networks
        run = networks.run
        self._undo.append((networks, "run", run))
        networks.run = lambda name, *a, **k: self.timed(run, f"network {name}")(name, *a, **k)
        return self

    def __exit__(self, *exc: object) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


def _owner(path: str) -> Any:
    """A module, or a class in one (``package.module.Class``)."""
    try:
        return importlib.import_module(path)
    except ModuleNotFoundError:
        module, _, name = path.rpartition(".")
        return getattr(importlib.import_module(module), name)


def white_parts(h: harness.Harness, repeats: int) -> dict[str, float]:
    """ms per white main image of each part, the nested ones split out (labelling = watermark +
    encoding + XMP + signing), and of the whole step (median)."""
    from ecomgen.serving.step import Request
    from ecomgen.serving.step import run_batch as run_step

    step = harness.python_step(next(m for m in h.models if m.name == "product_scene"), h.repository)
    inputs = dict(ops.product_scene(shop_photo(0), scene=WHITE[0], format=WHITE[1]).inputs)
    totals = []
    with PartTimer(step, HOOKS) as timer:
        for i in range(repeats + 1):
            if i == 1:
                timer.spent.clear()  # the first request compiles shapes and warms caches
            start = time.perf_counter()
            (result,) = run_step(step, [Request(dict(inputs))])
            totals.append(time.perf_counter() - start)
            if isinstance(result, Exception):
                raise SystemExit(f"product_scene refused the benchmark request: {result}")
    parts = {part: s / repeats * 1e3 for part, s in timer.spent.items()}
    labelling = parts.pop("labelling", 0.0)
    parts["encoding + XMP"] = labelling - parts.get("watermark", 0.0) - parts.get("C2PA signing", 0.0)
    whole = statistics.median(totals[1:]) * 1e3
    parts["other (checks, crop, resampling)"] = max(0.0, whole - sum(parts.values()))
    parts[TOTAL] = whole
    return parts


# --- report --------------------------------------------------------------------------------------------


def verdict(value: float, target: float, at_most: bool) -> str:
    ok = value <= target if at_most else value >= target
    return f"**{fmt(value, 0)}** ({'meets' if ok else 'misses'} the target of {fmt(target, 0)})"


CUTOUT_COLUMNS = ("photo (H×W)", "concurrency", "images/s", "p50 ms", "p99 ms", "requests", "failures")
SCENE_COLUMNS = ("scene", "format", "concurrency", "p50 ms", "p99 ms", "requests/s", "requests", "failures")
BATCH_COLUMNS = (
    "servers", "SKUs", "assets", "failed", "seconds", "assets/s", "assets/min", "requests per endpoint",
)  # fmt: skip
WHITE_TARGET = "a 2000×2000 white main image from a 1,000 px JPEG: p50 ≤ 350 ms at concurrency 1 (ms)"
BATCH_TARGET = (
    "the batch tool: ≥ 500 assets per minute (cut-out PNG + white main image) against one local server "
    "(assets/min)"
)


def render(r: dict[str, Any]) -> str:
    white_c1 = next(p for p in r["scene"] if p["scene"] == WHITE[0] and p["concurrency"] == 1)
    one = next(b for b in r["batch"] if b["servers"] == 1)
    targets = [
        (WHITE_TARGET, verdict(white_c1["p50_ms"], TARGET_WHITE_P50_MS, at_most=True)),
        (BATCH_TARGET, verdict(one["assets_per_min"], TARGET_ASSETS_PER_MIN, at_most=False)),
    ]
    cutouts = [
        (p["size"], p["concurrency"], fmt(p["per_s"]), fmt(p["p50_ms"]), fmt(p["p99_ms"]), p["requests"],
         p["failures"])
        for p in r["cutout"]
    ]  # fmt: skip
    scenes = [
        (p["scene"], p["format"], p["concurrency"], fmt(p["p50_ms"]), fmt(p["p99_ms"]), fmt(p["per_s"], 2),
         p["requests"], p["failures"])
        for p in r["scene"]
    ]  # fmt: skip
    lines = [
        "# Product studio: cut-outs, studio images, the batch tool",
        "",
        bullet(f"**Command**: `{r['command']}`"),
        bullet(f"**Date**: {r['date']}"),
        bullet(f"**Machine**: {report.machine_line(r['machine'])} (no GPU)"),
        bullet(f"**Weights**: {r['weights']}"),
        bullet("**Runtimes**: " + ", ".join(f"{k}: {v}" for k, v in r["runtimes"].items())),
        bullet(f"**C2PA signer**: {r['signer']}"),
        bullet(
            f"**Method**: the launcher on loopback serving {', '.join(MODELS)}; closed-loop clients "
            f"(`ecomgen_client.ProductClient`, one per user thread) for {r['seconds']:g} s per point; "
            f"the shop photo is a fixture photo enlarged to a {PHOTO_SIDE} px JPEG."
        ),
        "",
        "## Targets",
        "",
        *table(("target", "measured"), targets),
        "",
        "## product_cutout (one photo per request, same size)",
        "",
        *table(CUTOUT_COLUMNS, cutouts, "lrrrrrr"),
        "",
        f"## product_scene from a {PHOTO_SIDE} px JPEG upload (one PNG per request)",
        "",
        *table(SCENE_COLUMNS, scenes, "llrrrrrr"),
    ]
    return "\n".join([*lines, *_batch_lines(r), *_parts_lines(r)]) + "\n"


def _batch_lines(r: dict[str, Any]) -> list[str]:
    rows = [
        (b["servers"], b["rows"], b["assets"], b["failed"], fmt(b["seconds"]), fmt(b["assets_per_s"], 2),
         fmt(b["assets_per_min"], 0), ", ".join(f"{k}: {v}" for k, v in b["per_endpoint"].items()))
        for b in r["batch"]
    ]  # fmt: skip
    skus, concurrency = r["batch"][0]["rows"], r["batch_concurrency"]
    return [
        "",
        f"## The batch tool: {skus} SKUs, `cutout,white`, concurrency {concurrency}",
        "",
        "`ecomgen_client.batch.run_batch` (the `ecomgen-client batch` command) writing the cut-out PNG and "
        "the 2000×2000 white main image of every SKU; with two servers (two launchers on different ports "
        "of this machine, sharing its CPUs) the requests go round robin.",
        "",
        *table(BATCH_COLUMNS, rows, "rrrrrrrl"),
        *[f"- {b['servers']} server(s), not made: {e}" for b in r["batch"] for e in b.get("errors", [])],
    ]


def _parts_lines(r: dict[str, Any]) -> list[str]:
    parts = r["white_parts_ms"]
    rows = [(name, fmt(ms)) for name, ms in parts.items() if name != TOTAL]
    rows.append((f"**{TOTAL}**", f"**{fmt(parts[TOTAL])}**"))
    return [
        "",
        "## Where one white main image's time goes (in process, ms)",
        "",
        f"The served step (`product_scene`, scene `white`, 2000×2000 PNG from the {PHOTO_SIDE} px JPEG) in "
        f"this process; mean per part over {r['repeats']} requests after a warm-up, the whole request's "
        "median. A network listed is one the request ran (the x4 network only when the product must be "
        "enlarged more than twice).",
        "",
        *table(("part", "ms"), rows, "lr"),
        "",
        f"![where the time goes]({r['plot']})",
    ]


def plot(r: dict[str, Any], path: Path) -> None:
    plt = report.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 3.2), gridspec_kw={"width_ratios": [3, 1]})
    parts = {name: ms for name, ms in r["white_parts_ms"].items() if name != TOTAL}
    report.stacked_bar(left, 0, parts, {})
    left.axvline(TARGET_WHITE_P50_MS, color="k", linestyle="--", linewidth=1, label="p50 target (served)")
    left.set_yticks([])
    left.set_xlabel("ms per 2000×2000 white main image (in process)")
    left.legend(fontsize=6, loc="upper right", ncol=2)
    servers = [f"{b['servers']} server(s)" for b in r["batch"]]
    right.bar(servers, [b["assets_per_min"] for b in r["batch"]], color="C0")
    right.axhline(TARGET_ASSETS_PER_MIN, color="k", linestyle="--", linewidth=1)
    right.set_ylabel("assets / min (batch tool)")
    fig.suptitle(f"product studio ({r['machine']['description'][:70]})", fontsize=9)
    report.save_figure(fig, path)


# --- main ----------------------------------------------------------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=20.0, help="closed-loop window per point")
    p.add_argument("--cutout-concurrency", type=int, nargs="+", default=[1, 4])
    p.add_argument("--scene-concurrency", type=int, nargs="+", default=[1, 8])
    p.add_argument("--rows", type=int, default=200, help="SKUs in the batch tool's catalogue")
    p.add_argument("--batch-concurrency", type=int, default=8, help="the batch tool's requests in flight")
    p.add_argument("--repeats", type=int, default=10, help="in-process white main images timed")
    harness.add_arguments(p, smoke="tiny weights, 0.5 s windows, 12 SKUs, 2 repeats")
    return harness.parse_args(p, argv, seconds=0.5, rows=12, repeats=2)


def run(opt: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ecomgen-studio-c2pa-") as keys:
        signer = signing_identity(Path(keys))  # before the server starts: its stubs sign too
        with harness.Harness(
            MODELS, opt.weights, opt.cpu_runtime, quiet=opt.wait_quiet, prefix="ecomgen-studio-"
        ) as h:
            cutout, scene = cutout_points(h.url, opt, h), scene_points(h.url, opt, h)
            batch = batch_points(h, opt)
            parts = white_parts(h, opt.repeats)
    return {
        **h.facts(),
        "runtimes": h.runtimes,
        "signer": signer,
        "seconds": opt.seconds,
        "batch_concurrency": opt.batch_concurrency,
        "repeats": opt.repeats,
        "targets": {"white_p50_ms_at_c1": TARGET_WHITE_P50_MS, "batch_assets_per_min": TARGET_ASSETS_PER_MIN},
        "cutout": cutout,
        "scene": scene,
        "batch": batch,
        "white_parts_ms": parts,
    }


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    result = run(opt)
    stem = opt.out / report.result_stem("studio", result["machine"])
    result["plot"] = stem.with_suffix(".png").name
    stem.parent.mkdir(parents=True, exist_ok=True)
    plot(result, stem.with_suffix(".png"))
    report.write_json(stem.with_suffix(".json"), result)
    md = stem.with_suffix(".md")
    md.write_text(render(result))
    print(md.read_text())
    failed = [p for p in [*result["cutout"], *result["scene"]] if p["failures"]] + [
        b for b in result["batch"] if not b["ok"]
    ]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
