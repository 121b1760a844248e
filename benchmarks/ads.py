"""Where an ad creative's time goes: generation, upscale, layout, watermark, encoding, signing.

One process, no server: the served model's own step, as the cpu target runs it (the ``AdCreative``
handler, which runs the networks its request's route needs, each on its calibrated runtime), on two
requests: the benchmark request of ``benchmarks/payloads.py`` (a generated product, 4 variants at
1080x1080) and the same with an uploaded product photo instead (decoded once, cut out; neither the
generator nor the x4 network runs). Each part of a request is timed where the handler calls it
(each network, decoding, the matte's refinement, layout, labelling); the labelling is then split
into its parts by timing the library calls it makes (``provenance.embed_watermark``,
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

from benchmarks import harness, report
from benchmarks.harness import build_repository, export_networks, resolve_weights
from benchmarks.payloads import payload
from benchmarks.report import bullet, fmt, table
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


def step_for(weights_choice: str, work: Path) -> tuple[Any, dict[str, str], str]:
    """The ad model's served step over a freshly built cpu repository."""
    from google.protobuf import json_format

    from ecomgen.serving.handlers import load_handler
    from ecomgen.serving.step import StepConfig
    from export.repository import model_configs

    model = REGISTRY[MODEL]
    weights = resolve_weights(weights_choice, [model])
    export_networks([model], weights, work / "onnx")
    root, runtimes = build_repository(work / "repo", [model], work / "onnx")
    repo_model = model_configs(model, "cpu")[0]
    config = json_format.MessageToDict(repo_model.config, preserving_proto_field_name=True)
    step_config = StepConfig.from_model_config(config, root / model.name / "1")
    return load_handler(step_config.params["handler"])(step_config), runtimes, weights.label([model])


# Where the handler spends a request: (module, attribute) -> the part it is counted as.
HOOKS = (
    ("ecomgen.serving.handlers.ads", "decode_uploads", "decode upload"),
    ("ecomgen.serving.handlers.products", "refine_alpha", "matte refinement (guided filter)"),
    ("ecomgen.creative.ads", "render_ad", "layout (render_ad)"),
    ("ecomgen.serving.handlers.ads", "labelled", "labelling + encoding"),
)


def time_request(step: Any, inputs: dict[str, np.ndarray], repeats: int) -> dict[str, float]:
    """Median ms per request of each part the handler runs, and of the whole request."""
    import importlib

    from ecomgen.serving.step import Request, run_batch

    spent: dict[str, list[float]] = {}

    def timed(fn: Callable[..., Any], part: str) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent.setdefault(part, []).append(time.perf_counter() - start)

        return wrapper

    restore = []
    for module, attr, part in HOOKS:
        mod = importlib.import_module(module)
        restore.append((mod, attr, getattr(mod, attr)))
        setattr(mod, attr, timed(getattr(mod, attr), part))
    run = step.networks.run
    step.networks.run = lambda name, *a, **k: timed(run, f"network {name}")(name, *a, **k)
    totals: list[float] = []
    try:
        for i in range(repeats + 1):
            if i == 1:
                spent.clear()  # the first request compiles shapes and warms caches
            start = time.perf_counter()
            (result,) = run_batch(step, [Request(dict(inputs))])
            totals.append(time.perf_counter() - start)
            if isinstance(result, Exception):
                raise SystemExit(f"{MODEL} refused the benchmark request: {result}")
    finally:
        step.networks.run = run
        for mod, attr, fn in restore:
            setattr(mod, attr, fn)
    parts = {part: sum(t) / repeats * 1e3 for part, t in spent.items()}
    parts["request (whole step, in process)"] = statistics.median(totals[1:]) * 1e3
    return parts


def uploaded(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The benchmark request with the product uploaded (a fixture photo, JPEG) instead of generated."""
    from benchmarks.payloads import _jpeg

    out = {k: v for k, v in inputs.items() if k not in ("class_id", "seed")}
    photo = np.empty(1, dtype=object)
    photo[0] = _jpeg("products", 0, (640, 480))
    out["product"] = photo
    return out


def layout_parts(step: Any, inputs: dict[str, np.ndarray], repeats: int) -> dict[str, dict[str, float]]:
    """ms per request for each part of the labelling, per output encoding."""
    from ecomgen.creative import ads
    from ecomgen.creative.provenance import (
        TRAINED_ALGORITHMIC_MEDIA,
        Encoding,
        embed_watermark,
        encode_labelled,
    )
    from ecomgen.serving.handlers.ads import ad_fields, seeds_for
    from ecomgen.serving.handlers.labelled import signer

    fields = ad_fields(inputs)
    products = [p.rgb for p in step.products.generate(*seeds_for(inputs, fields.variants))]
    c2pa = signer()
    if c2pa is None:
        raise SystemExit("no C2PA signer: set ECOMGEN_C2PA_CERT/ECOMGEN_C2PA_KEY or let the run make one")
    rendered = [ads.render_ad(p, fields, v % len(ads.TEMPLATES)) for v, p in enumerate(products)]

    def watermark(images: list[np.ndarray]) -> list[np.ndarray]:
        return [embed_watermark(r) for r in images]

    def encode(images: list[np.ndarray], enc: Encoding) -> list[bytes]:
        return [encode_labelled(m, enc, watermark=False) for m in images]

    def sign(data: list[bytes], enc: Encoding) -> list[bytes]:
        return [c2pa.sign(d, enc, TRAINED_ALGORITHMIC_MEDIA, fields.title) for d in data]

    marked = watermark(rendered)
    out: dict[str, dict[str, float]] = {}
    encodings: tuple[Encoding, ...] = ENCODINGS
    for enc in encodings:
        encoded = encode(marked, enc)
        out[enc] = {
            "watermark": median_ms(functools.partial(watermark, rendered), repeats),
            "encoding + XMP": median_ms(functools.partial(encode, marked, enc), repeats),
            "C2PA signing": median_ms(functools.partial(sign, encoded, enc), repeats),
            "bytes per creative": float(np.mean([len(d) for d in sign(encoded, enc)])),
        }
    return out


TOTAL = "request (whole step, in process)"


def render(payload_: dict[str, Any]) -> str:
    routes, parts = payload_["routes_ms"], payload_["labelling_parts_ms"]
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
            f"**Method**: one process, the served step as the cpu target runs it; mean over "
            f"{payload_['repeats']} requests after a warm-up (whole request: median). Served latency "
            "under load: `benchmarks.ensemble --model ad_creative`."
        ),
        "",
        f"## One request, by route ({payload_['encoding']} out; ms per request)",
        "",
    ]
    names = list(dict.fromkeys(k for r in routes.values() for k in r if k != TOTAL))
    cells = [(name, *(fmt(r[name]) if name in r else "-" for r in routes.values())) for name in names]
    cells.append(("**whole request**", *(f"**{fmt(r[TOTAL])}**" for r in routes.values())))
    lines += table(("part", *routes), cells, "l" + "r" * len(routes))
    lines += [
        "",
        "## The labelling, part by part, per output encoding (generated product)",
        "",
        f"ms per request ({payload_['variants']} creatives).",
        "",
    ]
    cells = [
        (enc, *(fmt(row[k]) for k in ("watermark", "encoding + XMP", "C2PA signing")),
         fmt(row["bytes per creative"] / 1024))
        for enc, row in parts.items()
    ]  # fmt: skip
    lines += table(
        ("encoding", "watermark", "encoding + XMP", "C2PA signing", "KiB per creative"), cells, "lrrrr"
    )
    return "\n".join(lines) + "\n"


def plot(payload_: dict[str, Any], path: Path) -> None:
    routes = payload_["routes_ms"]
    fig, ax = report.pyplot().subplots(figsize=(8, 2.8))
    colours: dict[str, str] = {}  # one colour per part on every bar
    for i, parts in enumerate(routes.values()):
        report.stacked_bar(ax, i, {name: ms for name, ms in parts.items() if name != TOTAL}, colours)
    ax.set_yticks(range(len(routes)), list(routes))
    ax.set_xlabel(f"ms per request ({payload_['variants']} creatives, {payload_['format']})")
    ax.legend(fontsize=6, loc="lower right")
    ax.set_title(f"ad_creative: where the time goes ({payload_['machine_line'][:60]})", fontsize=9)
    report.save_figure(fig, path, dpi=120)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=15, help="timed requests per measurement")
    harness.add_arguments(p, runtime=False, smoke="tiny weights, 2 repeats (CI)")
    return harness.parse_args(p, argv, repeats=2)


def run(opt: argparse.Namespace) -> dict[str, Any]:
    request = payload(MODEL, index=0)
    with tempfile.TemporaryDirectory(prefix="ecomgen-ads-") as tmp:
        work = Path(tmp)
        signer_source = signing_identity(work / "c2pa")
        step, runtimes, weights = step_for(opt.weights, work)
        if opt.wait_quiet:
            harness.wait_until_quiet()
        routes = {
            "generated product": time_request(step, request.inputs, opt.repeats),
            "uploaded photo": time_request(step, uploaded(request.inputs), opt.repeats),
        }
        parts = layout_parts(step, request.inputs, opt.repeats)
    info = harness.machine_info()
    return {
        "command": report.command_line(),
        "date": report.today(),
        "machine": info,
        "machine_line": report.machine_line(info),
        "weights": weights,
        "runtimes": runtimes,
        "signer": signer_source,
        "repeats": opt.repeats,
        "variants": int(request.inputs["variants"].reshape(-1)[0]),
        "format": request.inputs["format"].reshape(-1)[0].decode(),
        "encoding": "jpeg (the default)",
        "routes_ms": routes,
        "labelling_parts_ms": parts,
    }


def write_report(opt: argparse.Namespace, result: dict[str, Any]) -> Path:
    opt.out.mkdir(parents=True, exist_ok=True)
    stem = opt.out / report.result_stem("ads", result["machine"])
    report.write_json(stem.with_suffix(".json"), result)
    md = stem.with_suffix(".md")
    md.write_text(render(result))
    plot(result, stem.with_suffix(".png"))
    print(md.read_text())
    return md


def main(argv: list[str] | None = None) -> int:
    opt = parse(argv)
    write_report(opt, run(opt))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
