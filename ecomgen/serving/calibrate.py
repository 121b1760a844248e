"""Choose each network's CPU runtime and precision on this host, by measurement.

For every network the cpu target runs, a few seconds of calibration time ONNX Runtime
fp32, OpenVINO fp32 and (where the CPU has bf16 hardware) OpenVINO bf16 at the
network's opt batch, check each against ONNX Runtime fp32 under the parity gate's
threshold (uint8 PSNR >= 40 dB on every output), and pick the fastest that passes. The
choice is cached per CPU model and ISA, and per ONNX file (by hash), under
``build/calibration/``, logged, and written next to each installed ONNX file as
``<network>.runtime.json``, which the serving step reads when its spec says ``auto``.
A spec's ``cpu_runtime`` or ``ecomgen serve --cpu-runtime`` overrides it.

Why measure: the right answer changed from host to host. OpenVINO bf16 was +71% on a
Zen 5 with avx512_bf16 and slower than fp32 on a Xeon with avx512_bf16 but no AMX.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ecomgen.hostinfo import has_bf16, machine_description, machine_slug
from ecomgen.numerics import output_levels, outputs_match
from ecomgen.serving.runners import CHOICE_FILE, OnnxRuntimeRunner, OpenVinoRunner, Runner
from ecomgen.spec import NetworkSpec

log = logging.getLogger("ecomgen.calibrate")


@dataclass(frozen=True)
class Measurement:
    runtime: str
    items_per_s: float
    min_psnr_db: float
    passed: bool
    compile_s: float


@dataclass(frozen=True)
class Choice:
    network: str
    runtime: str
    machine: str
    batch: int
    onnx_sha256: str
    measurements: tuple[Measurement, ...]
    calibrated_at: str
    # The largest batch the runner computes in one call (larger batches run as chunks): the size
    # with the best items/s on this host for OpenVINO (0: no limit). Measured per host.
    max_chunk: int = 0
    chunk_items_per_s: tuple[tuple[int, float], ...] = ()

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Choice:
        raw = json.loads(text)
        raw["measurements"] = tuple(Measurement(**m) for m in raw["measurements"])
        raw["chunk_items_per_s"] = tuple(tuple(c) for c in raw.get("chunk_items_per_s", ()))
        return cls(**raw)


def candidates() -> list[str]:
    out = ["onnxruntime", "openvino-f32"]
    if has_bf16():
        out.append("openvino-bf16")
    return out


def _runner(runtime: str, path: Path, threads: int, batch: int) -> Runner:
    if runtime == "onnxruntime":
        return OnnxRuntimeRunner(path, threads)
    return OpenVinoRunner(path, threads, batch, runtime.split("-", 1)[1], compile_sizes=(batch,))


def output_parity(
    net: NetworkSpec, outputs: Mapping[str, np.ndarray], ref: Mapping[str, np.ndarray]
) -> tuple[bool, float, int]:
    """Every output of ``net`` against the reference under the output-parity rule
    (``numerics.outputs_match``): (all pass, the lowest PSNR in dB, the largest uint8 level difference)."""
    passed, worst_db, worst_diff = True, float("inf"), 0
    for t in net.outputs:
        ok, db = outputs_match(ref[t.name], outputs[t.name], t.kind)
        want, got = output_levels(t.kind, ref[t.name], outputs[t.name])
        diff = int(np.abs(want.astype(np.int16) - got.astype(np.int16)).max()) if want.size else 0
        passed, worst_db, worst_diff = passed and ok, min(worst_db, db), max(worst_diff, diff)
    return passed, worst_db, worst_diff


def measure(
    net: NetworkSpec, path: Path, threads: int, seconds: float = 1.5, batch: int | None = None
) -> list[Measurement]:
    """Time every candidate on the same inputs and score it against ONNX Runtime fp32."""
    batch = batch or net.profile.opt_batch
    feeds = net.sample_inputs(batch, seed=7)
    reference = OnnxRuntimeRunner(path, threads).run(feeds)
    results = []
    for runtime in candidates():
        start = time.perf_counter()
        runner = _runner(runtime, path, threads, batch)
        compile_s = time.perf_counter() - start
        out = runner.run(feeds)  # warm-up, and the parity sample
        passed, psnr, _ = output_parity(net, out, reference)
        runs, start = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - start < seconds:
            runner.run(feeds)
            runs += 1
        rate = runs * batch / (time.perf_counter() - start)
        results.append(Measurement(runtime, round(rate, 1), round(psnr, 2), passed, round(compile_s, 2)))
        log.info("calibrate %s: %s %.0f items/s, PSNR %.1f dB", net.name, runtime, rate, psnr)
    return results


def measure_chunks(
    net: NetworkSpec, path: Path, threads: int, runtime: str, seconds: float = 0.4
) -> list[tuple[int, float]]:
    """items/s of ``runtime`` at every power-of-two batch up to the network's maximum (OpenVINO on
    networks whose only dynamic axis is the batch): on some CPUs a batch of 8 runs more items a
    second than one of 64 (caches), and the runner then computes a big batch as chunks."""
    if not runtime.startswith("openvino") or net.profile.dims:
        return []
    sizes = [1 << i for i in range(net.max_batch_size.bit_length()) if (1 << i) <= net.max_batch_size]
    runner = OpenVinoRunner(path, threads, net.max_batch_size, runtime.split("-", 1)[1], compile_sizes=sizes)
    out = []
    for batch in sizes:
        feeds = net.sample_inputs(batch, seed=7)
        runner.run(feeds)  # warm-up
        runs, start = 0, time.perf_counter()
        while runs < 3 or time.perf_counter() - start < seconds:
            runner.run(feeds)
            runs += 1
        out.append((batch, round(runs * batch / (time.perf_counter() - start), 1)))
    log.info("calibrate %s chunks on %s: %s", net.name, runtime, ", ".join(f"{b}: {r:.0f}/s" for b, r in out))
    return out


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def calibrate(
    net: NetworkSpec,
    path: Path,
    cache_dir: Path,
    threads: int = 2,
    seconds: float = 1.5,
    refresh: bool = False,
) -> Choice:
    """The cached choice for this CPU and ONNX file, or a fresh measurement."""
    digest = sha256(path)
    cache = cache_dir / machine_slug() / f"{net.name}-{digest[:16]}.json"
    if cache.exists() and not refresh:
        return Choice.from_json(cache.read_text())
    measurements = measure(net, path, threads, seconds)
    passing = [m for m in measurements if m.passed] or [m for m in measurements if m.runtime == "onnxruntime"]
    best = max(passing, key=lambda m: m.items_per_s)
    chunks = measure_chunks(net, path, threads, best.runtime)
    choice = Choice(
        network=net.name,
        runtime=best.runtime,
        machine=machine_description(),
        batch=net.profile.opt_batch,
        onnx_sha256=digest,
        measurements=tuple(measurements),
        calibrated_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        max_chunk=max(chunks, key=lambda c: c[1])[0] if chunks else 0,
        chunk_items_per_s=tuple(chunks),
    )
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(choice.to_json())
    shown = ", ".join(f"{m.runtime} {m.items_per_s:.0f}/s ({m.min_psnr_db:.0f} dB)" for m in measurements)
    log.info("%s on %s: chose %s [%s]", net.name, machine_slug(), choice.runtime, shown)
    return choice


def write_choice(onnx_file: Path, choice: Choice) -> Path:
    """``<network>.runtime.json`` beside an installed ONNX file: what ``resolve_runtime`` reads."""
    target = onnx_file.with_name(f"{onnx_file.stem}.{CHOICE_FILE}")
    target.write_text(choice.to_json())
    return target
