"""Measure what the pod specs are derived from: time to ready, memory, /dev/shm, queue time.

    flock /tmp/ecomgen-cpu.lock .venv/bin/python deploy/measure_resources.py \\
        --repository model_repository --out deploy/measured

Starts the cpu repository on the embedded tritonserver (the launcher, as the CPU image runs it),
records the seconds until /v2/health/ready answers 200 (the startup probe's budget), then drives
load phases over gRPC: product_gan at rising concurrency, full 64-image batches, try-on with the
fixture photos, and every other model at the largest inputs it accepts (try-on 2048x2048 tensors
and PNG bytes, upscale 512x512, personalize 32 photos of 1024x1024, 16 tall PNG ads, a 64-SKU
sheet) so the Python stubs' shared-memory regions grow to their largest batches.
Every 0.5 s it samples the server's process tree (the launcher, tritonserver, the Python stubs;
``ecomgen.launcher.sampler``): summed RSS, summed PSS (shared pages counted once; what the memory
cgroup roughly sees) and the bytes allocated in /dev/shm to the stubs' regions and the ensembles'
admission tables. Per phase it reads Prometheus metrics before and
after and reports, per model, queue time per successful request (the HPA metric), compute time
per request and inferences per execution (batch size).

Writes ``<out>/<date>-<host>.json`` and ``.md``. deploy/README.md derives the requests, limits,
sizeLimit check and HPA target from the newest file; rerun this after changing the repository.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import re
import sys
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ecomgen.hostinfo import cpu_model
from ecomgen.launcher import Launched, LoadMeter, Peak, ProcessTree, Sampler, wait_ready
from training.paths import MODEL_REPOSITORY, REPO_ROOT

MiB = 1 << 20
VITON = REPO_ROOT / "tests" / "fixtures" / "viton" / "test"
_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def machine() -> str:
    mem = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / (1 << 30)
    return f"{cpu_model()}, {os.cpu_count()} CPUs, {mem:.1f} GiB RAM"


# --- metrics -----------------------------------------------------------------------


def scrape(url: str) -> dict[tuple[str, str], float]:
    """(metric, model) -> value, summed over the other labels (version, reason)."""
    with urllib.request.urlopen(url, timeout=5) as r:
        text = r.read().decode()
    out: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        m = _SAMPLE.match(line)
        if not m or not m.group(1).startswith("nv_inference_"):
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        key = (m.group(1), labels.get("model", ""))
        out[key] = out.get(key, 0.0) + float(m.group(4))
    return out


def per_model(before: dict[tuple[str, str], float], after: dict[tuple[str, str], float]) -> dict[str, Any]:
    def d(metric: str, model: str) -> float:
        return after.get((metric, model), 0.0) - before.get((metric, model), 0.0)

    models = sorted({model for (_, model) in after if model})
    rows: dict[str, Any] = {}
    for model in models:
        success = d("nv_inference_request_success", model)
        if success <= 0:
            continue
        execs = d("nv_inference_exec_count", model)
        rows[model] = {
            "success": int(success),
            "failure": int(d("nv_inference_request_failure", model)),
            "queue_us_per_request": d("nv_inference_queue_duration_us", model) / success,
            "compute_infer_us_per_request": d("nv_inference_compute_infer_duration_us", model) / success,
            "batch_size": d("nv_inference_count", model) / execs if execs else 0.0,
        }
    return rows


# --- load ----------------------------------------------------------------------------


def fixture_pair() -> dict[str, NDArray[np.uint8]]:
    from PIL import Image

    person = sorted((VITON / "image").glob("*.jpg"))[0]
    garment = sorted((VITON / "cloth").glob("*.jpg"))[0]
    out = {}
    for name, path in (("person", person), ("garment", garment)):
        with Image.open(path) as im:
            out[name] = np.asarray(im.convert("RGB"), dtype=np.uint8)[None]
    return out


def largest_pair(side: int = 2048, seed: int = 0) -> dict[str, NDArray[np.uint8]]:
    rng = np.random.default_rng(seed)
    return {n: rng.integers(0, 256, (1, side, side, 3), dtype=np.uint8) for n in ("person", "garment")}


def largest_png(side: int = 2048, seed: int = 0) -> bytes:
    """Noise does not compress: a 2048x2048 RGB PNG of noise is close to the 16 MiB input limit."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(
        buf, format="PNG", compress_level=1
    )
    return buf.getvalue()


@dataclass
class Phase:
    name: str
    model: str
    concurrency: int
    seconds: float
    make_inputs: Callable[[Any, int], list[Any]]
    outputs: tuple[str, ...] = ()  # () = the contract's required outputs
    images_per_request: int = 1
    result: dict[str, Any] = field(default_factory=dict)


def product_inputs(batch: int) -> Callable[[Any, int], list[Any]]:
    def make(grpc: Any, i: int) -> list[Any]:
        cls = grpc.InferInput("class_id", [batch, 1], "INT32")
        cls.set_data_from_numpy((np.arange(batch, dtype=np.int32) % 10).reshape(batch, 1))
        seed = grpc.InferInput("seed", [batch, 1], "INT64")
        seed.set_data_from_numpy((np.arange(batch, dtype=np.int64) + i * batch).reshape(batch, 1))
        return [cls, seed]

    return make


def tensor_inputs(pair: dict[str, NDArray[np.uint8]]) -> Callable[[Any, int], list[Any]]:
    def make(grpc: Any, i: int) -> list[Any]:
        out = []
        for name, array in pair.items():
            t = grpc.InferInput(name, list(array.shape), "UINT8")
            t.set_data_from_numpy(array)
            out.append(t)
        return out

    return make


def bytes_inputs(data: bytes) -> Callable[[Any, int], list[Any]]:
    array = np.array([[data]], dtype=np.object_)

    def make(grpc: Any, i: int) -> list[Any]:
        out = []
        for name in ("person", "garment"):
            t = grpc.InferInput(name, [1, 1], "BYTES")
            t.set_data_from_numpy(array)
            out.append(t)
        return out

    return make


async def drive(url: str, phase: Phase) -> tuple[int, int, list[str]]:
    import tritonclient.grpc as grpc
    from tritonclient.grpc.aio import InferenceServerClient

    ok = failed = 0
    errors: list[str] = []
    deadline = time.monotonic() + phase.seconds
    outputs = [grpc.InferRequestedOutput(o) for o in phase.outputs]
    async with InferenceServerClient(url) as client:

        async def worker(w: int) -> None:
            nonlocal ok, failed
            i = w
            while time.monotonic() < deadline:
                try:
                    await client.infer(
                        phase.model, phase.make_inputs(grpc, i), outputs=outputs, client_timeout=60
                    )
                    ok += 1
                except Exception as e:
                    failed += 1
                    if len(errors) < 5:
                        errors.append(f"{type(e).__name__}: {str(e)[:200]}")
                i += phase.concurrency

        await asyncio.gather(*(worker(w) for w in range(phase.concurrency)))
    return ok, failed, errors


def named_inputs(arrays: dict[str, tuple[str, NDArray[Any]]]) -> Callable[[Any, int], list[Any]]:
    """Fixed inputs: name -> (Triton dtype, array)."""

    def make(grpc: Any, i: int) -> list[Any]:
        out = []
        for name, (dtype, array) in arrays.items():
            t = grpc.InferInput(name, list(array.shape), dtype)
            t.set_data_from_numpy(array)
            out.append(t)
        return out

    return make


def phases(seconds: float, served: set[str]) -> list[Phase]:
    """Every load step for the models ``served`` has; the largest inputs each contract allows."""
    rng = np.random.default_rng(1)
    pair = fixture_pair()
    big = largest_pair()
    png = largest_png()
    out = [
        Phase(f"product_gan single c={c}", "product_gan", c, seconds, product_inputs(1))
        for c in (1, 8, 32, 128)
    ]
    out.append(
        Phase("product_gan batch64 c=4", "product_gan", 4, seconds, product_inputs(64), images_per_request=64)
    )
    out.append(Phase("tryon fixture 256x192 c=8", "tryon", 8, seconds, tensor_inputs(pair)))
    out.append(Phase("tryon 2048x2048 tensors c=8", "tryon", 8, seconds, tensor_inputs(big)))
    out.append(
        Phase(
            f"tryon_bytes 2048x2048 PNG ({len(png) / MiB:.1f} MiB) c=8",
            "tryon_bytes",
            8,
            seconds,
            bytes_inputs(png),
        )
    )
    # 512x512 in, 2048x2048 out: the upscaler's largest batch (16) is its /dev/shm maximum.
    big_lowres = rng.integers(0, 256, (1, 512, 512, 3), dtype=np.uint8)
    out.append(
        Phase("upscale 512x512 c=16", "upscale", 16, seconds, named_inputs({"image": ("UINT8", big_lowres)}))
    )
    out.append(Phase("product_detail c=16", "product_detail", 16, seconds, product_inputs(1)))
    # No batching (max_batch_size 0): one request carries up to 32 history photos of 1024x1024.
    history = rng.integers(0, 256, (32, 1024, 1024, 3), dtype=np.uint8)
    personalize: dict[str, tuple[str, NDArray[Any]]] = {
        "history": ("UINT8", history),
        "seed": ("INT64", np.array([7], dtype=np.int64)),
        "count": ("INT32", np.array([16], dtype=np.int32)),
    }
    out.append(
        Phase(
            "personalize 32x1024x1024 history c=2",
            "personalize",
            2,
            seconds,
            named_inputs(personalize),
            ("image",),
        )
    )

    # The layout steps at their largest: 16 tall PNG ads, and a full 64-SKU sheet in PNG.
    def text(value: str, rows: int = 1) -> tuple[str, NDArray[Any]]:
        return "BYTES", np.array([value.encode()] * rows, dtype=np.object_)

    ads: dict[str, tuple[str, NDArray[Any]]] = {
        "class_id": ("INT32", np.array([3], dtype=np.int32)),
        "seed": ("INT64", np.array([11], dtype=np.int64)),
        "variants": ("INT32", np.array([16], dtype=np.int32)),
        "title": text("Leather weekend bag, hand-stitched, in three colours"),  # 52 of 70 columns
        "price": text("129.90"),
        "currency": text("EUR"),
        "badge": text("New season"),
        "cta": text("Shop now"),
        "format": text("1080x1920"),
        "encoding": text("png"),
    }
    out.append(Phase("ad_creative 16 x 1080x1920 PNG c=2", "ad_creative", 2, seconds, named_inputs(ads)))
    skus = 64
    sheet: dict[str, tuple[str, NDArray[Any]]] = {
        "class_id": ("INT32", np.arange(skus, dtype=np.int32) % 10),
        "seed": ("INT64", np.arange(skus, dtype=np.int64)),
        "sku": text("SKU-0000000", skus),
        "stock": ("INT32", (np.arange(skus, dtype=np.int32) * 7) % 40),
        "encoding": text("png"),
    }
    out.append(Phase("inventory_sheet 64 SKUs PNG c=2", "inventory_sheet", 2, seconds, named_inputs(sheet)))
    from ecomgen_client.contracts import CONTRACTS

    def required(model: str) -> tuple[str, ...]:
        return tuple(t.name for t in CONTRACTS[model].outputs if not t.optional)

    return [replace(ph, outputs=ph.outputs or required(ph.model)) for ph in out if ph.model in served]


# --- report --------------------------------------------------------------------------


def markdown(payload: dict[str, Any]) -> str:
    lines = [
        "# Resource measurement of the cpu repository (embedded tritonserver)",
        "",
        f"- **Date**: {payload['date']}",
        f"- **Command**: `{payload['command']}` (took {payload['wall_s'] / 60:.1f} min)",
        f"- **Machine**: {payload['machine']}",
        f"- **Time to ready**: {payload['ready_s']:.1f} s from process start to `/v2/health/ready` = 200"
        f" (`ecomgen serve --no-build`, {payload['models']} models)",
        f"- **Peak over the run**: RSS sum {payload['peak']['rss'] / MiB:.0f} MiB, PSS sum "
        f"{payload['peak']['pss'] / MiB:.0f} MiB, /dev/shm {payload['peak']['shm'] / MiB:.0f} MiB, "
        f"{payload['peak']['processes']} processes",
        "",
        "| phase | req/s | images/s | failed | server cores | client cores | other jobs' cores | "
        "max queue µs/req (model) | peak RSS MiB | peak PSS MiB | peak /dev/shm MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|",
    ]
    for ph in payload["phases"]:
        worst = ph["max_queue"]
        lines.append(
            f"| {ph['name']} | {ph['requests_per_s']:.1f} | {ph['images_per_s']:.1f} | {ph['failed']} | "
            f"{ph['server_cores']:.2f} | {ph.get('client_cores', 0.0):.2f} | "
            f"{ph.get('other_jobs_cores', 0.0):.2f} | "
            f"{worst['queue_us_per_request']:,.0f} ({worst['model']}) | "
            f"{ph['peak']['rss'] / MiB:.0f} | {ph['peak']['pss'] / MiB:.0f} | {ph['peak']['shm'] / MiB:.0f} |"
        )
    lines += ["", "Per model (queue and compute per successful request, inferences per execution):", ""]
    lines += ["| phase | model | requests | queue µs | compute µs | batch |", "|---|---|---:|---:|---:|---:|"]
    for ph in payload["phases"]:
        for model, row in ph["models"].items():
            lines.append(
                f"| {ph['name']} | {model} | {row['success']} | {row['queue_us_per_request']:,.0f} | "
                f"{row['compute_infer_us_per_request']:,.0f} | {row['batch_size']:.1f} |"
            )
    return "\n".join(lines) + "\n"


def run(repository: Path, seconds: float, log: Path, extra: list[str]) -> dict[str, Any]:
    """Start `ecomgen serve` the way the CPU image does (launcher + tritonserver + stubs: the
    container's whole process tree) and measure it."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT / "client"), str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
    )
    server = Launched(repository, *extra, serve=True, address="127.0.0.1", env=env, cwd=REPO_ROOT, log=log)
    server.start()
    try:
        wait_ready(server.http_url, 300, proc=server.proc, interval_s=0.1)
        ready_s = time.monotonic() - server.started_at
        served = {p.parent.name for p in (repository / "cpu").glob("*/config.pbtxt")}
        return {"ready_s": ready_s, **load_phases(server, seconds, served)}
    finally:
        server.stop()


IDLE = {
    "name": "idle after ready",
    "requests_per_s": 0.0,
    "images_per_s": 0.0,
    "failed": 0,
    "server_cores": 0.0,
    "models": {},
    "max_queue": {"model": "-", "queue_us_per_request": 0},
}


def load_phases(server: Launched, seconds: float, served: set[str]) -> dict[str, Any]:
    with Sampler({"server": server.pid}, interval_s=0.5, machine=False) as sampler:
        time.sleep(5)
        idle = sampler.take_peak("server")
        results: list[dict[str, Any]] = [{"name": IDLE["name"], "peak": asdict(idle), **IDLE}]
        overall = Peak()
        overall.merge(idle)
        for phase in phases(seconds, served):
            row = measure_phase(server, phase, sampler)
            overall.merge(Peak(**row["peak"]))
            results.append(row)
    return {"phases": results, "peak": asdict(overall)}


def measure_phase(server: Launched, phase: Phase, sampler: Sampler) -> dict[str, Any]:
    """One load phase: throughput, CPU (the server's, this client's, other jobs'), queue time per
    model from the metrics, and the memory peak."""
    tree, meter = ProcessTree(server.pid, memory=False), LoadMeter()
    before, cpu0, load0, own0 = (
        scrape(server.metrics_url),
        tree.cpu_seconds(),
        meter.read(),
        time.process_time(),
    )
    ok, failed, errors = asyncio.run(drive(server.grpc_url, phase))
    cpu, load1, own = tree.cpu_seconds() - cpu0, meter.read(), time.process_time() - own0
    wall = load1.time - load0.time
    time.sleep(1.0)  # Prometheus counters are updated after the responses go out
    models = per_model(before, scrape(server.metrics_url))
    peak = sampler.take_peak("server")
    worst = max(
        ({"model": m, **r} for m, r in models.items()),
        key=lambda r: r["queue_us_per_request"],
        default={"model": "-", "queue_us_per_request": 0.0},
    )
    row = {
        "name": phase.name,
        "model": phase.model,
        "concurrency": phase.concurrency,
        "seconds": wall,
        "ok": ok,
        "failed": failed,
        "errors": errors,
        "requests_per_s": ok / wall,
        "images_per_s": ok * phase.images_per_request / wall,
        "server_cores": cpu / wall,
        "client_cores": own / wall,
        "other_jobs_cores": load0.foreign_cores(load1),
        "models": models,
        "max_queue": {"model": worst["model"], "queue_us_per_request": worst["queue_us_per_request"]},
        "peak": asdict(peak),
    }
    print(
        f"{phase.name}: {row['requests_per_s']:.1f} req/s, {failed} failed, "
        f"{row['server_cores']:.2f} cores (other jobs {row['other_jobs_cores']:.2f}), "
        f"max queue {worst['queue_us_per_request']:,.0f} µs/req ({worst['model']}), "
        f"PSS {peak.pss / MiB:.0f} MiB, RSS {peak.rss / MiB:.0f} MiB, shm {peak.shm / MiB:.0f} MiB",
        flush=True,
    )
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repository", type=Path, default=MODEL_REPOSITORY, help="holds cpu/")
    p.add_argument("--seconds", type=float, default=10.0, help="per load phase")
    p.add_argument("--out", type=Path, default=REPO_ROOT / "deploy" / "measured")
    p.add_argument("serve_args", nargs="*", help="extra `ecomgen serve` flags (after --)")
    opt = p.parse_args(argv)
    started = time.monotonic()
    host = re.sub(r"[^a-z0-9]+", "-", machine().split(",")[0].lower()).strip("-")[:40]
    stem = opt.out / f"{date.today().isoformat()}-{host}"
    opt.out.mkdir(parents=True, exist_ok=True)
    log = Path(f"/tmp/measure_resources-{os.getpid()}.log")
    result = run(opt.repository.resolve(), opt.seconds, log, opt.serve_args)
    served = sorted(p.name for p in (opt.repository / "cpu").iterdir() if (p / "config.pbtxt").exists())
    payload = {
        "models": len(served),
        "model_names": served,
        "date": date.today().isoformat(),
        "command": " ".join(
            ["python", "deploy/measure_resources.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        "machine": machine(),
        "wall_s": time.monotonic() - started,
        **result,
    }
    stem.with_suffix(".json").write_text(json.dumps(payload, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(payload))
    print(f"wrote {stem}.json and .md")
    dead = [ph["name"] for ph in payload["phases"] if ph.get("failed") and not ph.get("ok")]
    if dead:  # a phase whose every request failed measured nothing: say so, loudly
        print(f"every request failed in: {', '.join(dead)} (see 'errors' in {stem}.json)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
