"""Where an ad creative's time goes: generation, upscale, layout, watermark, encoding, signing.

One process, no server: the served model's own steps, as the cpu target runs them (the handlers of
``ecomgen.serving.handlers`` and each network on its calibrated runtime, chained by the spec's
wiring through ``FusedPipeline``), on the benchmark request of ``benchmarks/payloads.py`` (4
variants at 1080x1080). Each step of the chain is timed; the layout step is then split into its
parts by timing the same library calls it makes (``ads.render_ad``, ``provenance.embed_watermark``,
``provenance.encode_labelled`` without the mark, ``C2paSigner.sign``), once per output encoding.
Served latency and throughput under load are in the ``benchmarks.ensemble --model ad_creative``
result; this says where a request's CPU time goes.

C2PA signing uses the identity of ``ECOMGEN_C2PA_CERT`` / ``ECOMGEN_C2PA_KEY`` when set, else a
throwaway ES256 identity made for the run (``tests/c2pa_certs.py``; nothing is kept).

    python -m benchmarks.ads                 # ~2 min; benchmarks/results/<date>-<cpu>-ads.{md,json,png}
    python -m benchmarks.ads --smoke --out /tmp/b
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from benchmarks.common import (
    RESULTS_DIR,
    WEIGHT_CHOICES,
    build_repository,
    bullet,
    command_line,
    export_networks,
    fmt,
    machine_info,
    machine_line,
    resolve_weights,
    result_stem,
    today,
    wait_until_quiet,
    write_json,
)
from benchmarks.payloads import payload
from ecomgen.registry import REGISTRY

MODEL = "ad_creative"
ENCODINGS: tuple[Literal["jpeg", "png", "webp"], ...] = ("jpeg", "png", "webp")


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: compiled shapes, font caches
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def signing_identity(folder: Path) -> str:
    """Point the C2PA environment at a signer; returns where it came from."""
    from ecomgen.creative.provenance import ENV_CERT as CERT_ENV
    from ecomgen.creative.provenance import ENV_KEY as KEY_ENV

    if os.environ.get(CERT_ENV) and os.environ.get(KEY_ENV):
        return f"${CERT_ENV} ({os.environ[CERT_ENV]})"
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.c2pa_certs import make_test_identity

    chain, key, _ = make_test_identity("ecomgen benchmark signer").write(folder)
    os.environ[CERT_ENV], os.environ[KEY_ENV] = str(chain), str(key)
    return "a throwaway ES256 identity made for this run (tests/c2pa_certs.py)"


def pipeline_for(weights_choice: str, work: Path) -> tuple[Any, dict[str, str], str]:
    """The ad model's steps as one FusedPipeline over a freshly built cpu repository."""
    from google.protobuf import json_format

    from ecomgen.serving.handlers.pipeline import FusedPipeline
    from ecomgen.serving.step import StepConfig
    from export.repository import model_configs

    model = dataclasses.replace(REGISTRY[MODEL], fuse_on_cpu=True)
    weights = resolve_weights(weights_choice, [model])
    export_networks([model], weights, work / "onnx")
    root, runtimes = build_repository(work / "repo", [model], work / "onnx")
    (repo_model,) = model_configs(model, "cpu")
    config = json_format.MessageToDict(repo_model.config, preserving_proto_field_name=True)
    return (
        FusedPipeline(StepConfig.from_model_config(config, root / model.name / "1")),
        runtimes,
        weights.label([model]),
    )


def time_steps(pipeline: Any, inputs: dict[str, np.ndarray], repeats: int) -> tuple[dict[str, float], dict]:
    """Median ms of each step of the chain, and the inputs the last (layout) step saw."""
    from ecomgen.serving.step import Request, run_batch

    spent: dict[str, list[float]] = {s.name: [] for s in pipeline.stages}
    seen: dict[str, dict[str, np.ndarray]] = {}
    for stage in pipeline.stages:
        inner = stage.compute

        def timed(feed: dict[str, np.ndarray], name: str = stage.name, inner: Any = inner) -> Any:
            seen[name] = feed
            start = time.perf_counter()
            out = inner(feed)
            spent[name].append(time.perf_counter() - start)
            return out

        stage.compute = timed
    total: list[float] = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        (result,) = run_batch(pipeline, [Request(dict(inputs))])
        total.append(time.perf_counter() - start)
        if isinstance(result, Exception):
            raise SystemExit(f"{MODEL} refused the benchmark request: {result}")
    steps = {name: statistics.median(t[1:]) * 1e3 for name, t in spent.items()}
    steps["request (whole chain, in process)"] = statistics.median(total[1:]) * 1e3
    return steps, seen[pipeline.stages[-1].name]


def layout_parts(layout_feed: dict[str, np.ndarray], repeats: int) -> dict[str, dict[str, float]]:
    """ms per request for each part of the layout step, per output encoding."""
    from ecomgen.creative import ads
    from ecomgen.creative.provenance import (
        TRAINED_ALGORITHMIC_MEDIA,
        Encoding,
        embed_watermark,
        encode_labelled,
    )
    from ecomgen.numerics import to_uint8_hwc
    from ecomgen.serving.handlers.ads import ad_fields
    from ecomgen.serving.handlers.labelled import signer

    fields = ad_fields(layout_feed)
    products = list(to_uint8_hwc(layout_feed["highres"]))[: fields.variants]
    c2pa = signer()
    if c2pa is None:
        raise SystemExit("no C2PA signer: set ECOMGEN_C2PA_CERT/ECOMGEN_C2PA_KEY or let the run make one")

    def layout() -> list[np.ndarray]:
        return [ads.render_ad(p, fields, v % len(ads.TEMPLATES)) for v, p in enumerate(products)]

    def watermark(images: list[np.ndarray]) -> list[np.ndarray]:
        return [embed_watermark(r) for r in images]

    def encode(images: list[np.ndarray], enc: Encoding) -> list[bytes]:
        return [encode_labelled(m, enc, watermark=False) for m in images]

    def sign(data: list[bytes], enc: Encoding) -> list[bytes]:
        return [c2pa.sign(d, enc, TRAINED_ALGORITHMIC_MEDIA, fields.title) for d in data]

    rendered = layout()
    marked = watermark(rendered)
    out: dict[str, dict[str, float]] = {}
    encodings: tuple[Encoding, ...] = ENCODINGS
    for enc in encodings:
        encoded = encode(marked, enc)
        out[enc] = {
            "layout (render_ad)": median_ms(layout, repeats),
            "watermark": median_ms(functools.partial(watermark, rendered), repeats),
            "encoding + XMP": median_ms(functools.partial(encode, marked, enc), repeats),
            "C2PA signing": median_ms(functools.partial(sign, encoded, enc), repeats),
            "bytes per creative": float(np.mean([len(d) for d in sign(encoded, enc)])),
        }
    return out


def render(payload_: dict[str, Any]) -> str:
    steps, parts = payload_["steps_ms"], payload_["layout_parts_ms"]
    total = steps["request (whole chain, in process)"]
    lines = [
        f"# Where an ad creative's time goes ({payload_['variants']} variants at {payload_['format']})",
        "",
        bullet(f"**Command**: `{payload_['command']}`"),
        bullet(f"**Date**: {payload_['date']}"),
        bullet(f"**Machine**: {payload_['machine_line']} (no GPU)"),
        bullet(f"**Weights**: {payload_['weights']}"),
        bullet("**Runtimes**: " + ", ".join(f"{k}: {v}" for k, v in payload_["runtimes"].items())),
        bullet(f"**C2PA signer**: {payload_['signer']}"),
        bullet(
            f"**Method**: one process, the served steps chained as the cpu target runs them; median of "
            f"{payload_['repeats']} requests after a warm-up. Served latency under load: "
            "`benchmarks.ensemble --model ad_creative`."
        ),
        "",
        f"## Steps of one request ({payload_['encoding']} out)",
        "",
        "| step | ms per request | share |",
        "|---|---:|---:|",
    ]
    for name, ms in steps.items():
        if name != "request (whole chain, in process)":
            lines.append(f"| {name} | {fmt(ms)} | {fmt(100 * ms / total)}% |")
    lines += [f"| **whole request** | **{fmt(total)}** | |", ""]
    lines += [
        "## The layout step, part by part, per output encoding",
        "",
        f"ms per request ({payload_['variants']} creatives).",
        "",
        "| encoding | layout | watermark | encoding + XMP | C2PA signing | KiB per creative |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for enc, row in parts.items():
        lines.append(
            f"| {enc} | {fmt(row['layout (render_ad)'])} | {fmt(row['watermark'])} | "
            f"{fmt(row['encoding + XMP'])} | {fmt(row['C2PA signing'])} | "
            f"{fmt(row['bytes per creative'] / 1024)} |"
        )
    return "\n".join(lines) + "\n"


def plot(payload_: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = {k: v for k, v in payload_["steps_ms"].items() if k != "request (whole chain, in process)"}
    layout_step = list(steps)[-1]
    parts = payload_["layout_parts_ms"]
    fig, ax = plt.subplots(figsize=(8, 3.2))
    colours: dict[str, Any] = {}  # one colour per segment name on every bar
    for i, enc in enumerate(parts):
        left = 0.0
        segments = [(k, v) for k, v in steps.items() if k != layout_step]
        segments += [(k, v) for k, v in parts[enc].items() if k != "bytes per creative"]
        for name, ms in segments:
            colour = colours.setdefault(name, f"C{len(colours)}")
            ax.barh(i, ms, left=left, color=colour, label=name if i == 0 else None)
            left += ms
    ax.set_yticks(range(len(parts)), [f"{enc} out" for enc in parts])
    ax.set_xlabel(f"ms per request ({payload_['variants']} creatives, {payload_['format']})")
    ax.legend(fontsize=7, loc="lower right")
    ax.set_title(f"ad_creative: where the time goes ({payload_['machine_line'][:60]})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="timed requests per measurement")
    p.add_argument("--weights", choices=WEIGHT_CHOICES, default="auto")
    p.add_argument("--wait-quiet", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--smoke", action="store_true", help="tiny weights, 2 repeats (CI)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    opt = p.parse_args(argv)
    if opt.smoke:
        opt.repeats, opt.weights, opt.wait_quiet = 2, "tiny", False
    return opt


def run(opt: argparse.Namespace) -> dict[str, Any]:
    request = payload(MODEL, index=0)
    with tempfile.TemporaryDirectory(prefix="ecomgen-ads-") as tmp:
        work = Path(tmp)
        signer_source = signing_identity(work / "c2pa")
        pipeline, runtimes, weights = pipeline_for(opt.weights, work)
        if opt.wait_quiet:
            wait_until_quiet()
        steps, layout_feed = time_steps(pipeline, request.inputs, opt.repeats)
        parts = layout_parts(layout_feed, opt.repeats)
    info = machine_info()
    return {
        "command": command_line(),
        "date": today(),
        "machine": info,
        "machine_line": machine_line(info),
        "weights": weights,
        "runtimes": runtimes,
        "signer": signer_source,
        "repeats": opt.repeats,
        "variants": int(request.inputs["variants"].reshape(-1)[0]),
        "format": request.inputs["format"].reshape(-1)[0].decode(),
        "encoding": "jpeg (the default)",
        "steps_ms": steps,
        "layout_parts_ms": parts,
    }


def report(opt: argparse.Namespace, result: dict[str, Any]) -> Path:
    opt.out.mkdir(parents=True, exist_ok=True)
    stem = opt.out / result_stem("ads", result["machine"])
    write_json(stem.with_suffix(".json"), result)
    md = stem.with_suffix(".md")
    md.write_text(render(result))
    plot(result, stem.with_suffix(".png"))
    print(md.read_text())
    return md


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    report(opt, run(opt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
