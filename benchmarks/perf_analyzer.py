"""Run perf_analyzer (shipped in the tritonclient 2.51.0 wheel) against a KServe v2 gRPC server.

The wheel installs the binary as a data script (``<venv>/bin/perf_analyzer``,
listed in tritonclient's RECORD). It links ``libb64.so.0d`` and
``libcudart.so.12`` (only for CUDA shared memory, unused here); both ship under
hashed names in ``site-packages/nvidia_pytriton.libs``, so this module links them
under their sonames in ``build/perf_analyzer_libs`` and puts that dir on
``LD_LIBRARY_PATH``.

Any served model: the request data (``--input-data``) is a set of payloads built from the
model's contract (``benchmarks/payloads.py``), the same as the Locust users send.

    python -m benchmarks.perf_analyzer --url 127.0.0.1:8001 --model product_gan --concurrency 32 --batch 1
"""

from __future__ import annotations

import argparse
import base64
import csv
import importlib.metadata
import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tritonclient.utils import serialize_byte_tensor

from benchmarks.harness import DEFAULT_MODEL
from benchmarks.payloads import PayloadMaker, contracts
from ecomgen.launcher import process_cpu_seconds
from training.paths import REPO_ROOT

LIB_DIR = REPO_ROOT / "build" / "perf_analyzer_libs"
# soname -> glob of the hashed copy in nvidia_pytriton.libs
_LIBS = {"libb64.so.0d": "libb64-*.so.0d", "libcudart.so.12": "libcudart-*.so.12*"}


class PerfAnalyzerError(RuntimeError):
    pass


def binary() -> Path:
    """perf_analyzer as installed by the tritonclient wheel."""
    for f in importlib.metadata.files("tritonclient") or ():
        if f.name == "perf_analyzer":
            path = Path(str(f.locate())).resolve()
            if path.exists():
                return path
    found = shutil.which("perf_analyzer") or str(Path(sys.executable).parent / "perf_analyzer")
    if not Path(found).exists():
        raise PerfAnalyzerError("perf_analyzer not found: install tritonclient[all]==2.51.0")
    return Path(found)


def library_dir(dest: Path = LIB_DIR) -> Path:
    """A directory with the sonames perf_analyzer wants, linked to the wheel's hashed copies."""
    libs = Path(str(importlib.metadata.distribution("nvidia-pytriton").locate_file("nvidia_pytriton.libs")))
    dest.mkdir(parents=True, exist_ok=True)
    for soname, pattern in _LIBS.items():
        matches = sorted(libs.glob(pattern))
        if not matches:
            raise PerfAnalyzerError(f"{pattern} not found in {libs}")
        link = dest / soname
        if link.is_symlink() or link.exists():
            if link.resolve() == matches[0].resolve():
                continue
            link.unlink()
        link.symlink_to(matches[0])
    return dest


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [str(library_dir()), env.get("LD_LIBRARY_PATH")]))
    return env


@dataclass
class PerfResult:
    concurrency: int
    batch: int
    images_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    avg_ms: float
    client_cores: float  # perf_analyzer's own CPU use over its whole run
    wall_s: float
    window_images_per_s: list[float]  # each measurement window, to show the noise
    command: str


def input_data(path: Path, model: str, batch: int, n: int = 16) -> Path:
    """Valid, varied requests of ``model`` (random data would break value ranges and image bounds).

    perf_analyzer sends ``-b`` rows per request; each entry here is one row (batched models)
    or one request (unbatched), with its shape when a dim is variable, BYTES as b64 of the serialized tensor.
    """
    contract = contracts()[model]
    maker = PayloadMaker(contract, rows=1)
    rows = []
    for _ in range(n):
        entry: dict[str, object] = {}
        for name, array in maker().inputs.items():
            row = array[0] if contract.batched else array
            t = contract.input(name)
            if t.dtype == "BYTES":
                # perf_analyzer sends the decoded b64 as the serialized tensor: length-prefixed elements.
                raw = serialize_byte_tensor(np.asarray(row, dtype=np.object_).reshape(-1)).item()
                entry[name] = {"b64": base64.b64encode(raw).decode()}
            elif t.variable:
                entry[name] = {"content": row.reshape(-1).tolist(), "shape": list(row.shape)}
            else:
                entry[name] = row.reshape(-1).tolist()
        rows.append(entry)
    path.write_text(json.dumps({"data": rows}))
    return path


def command(
    url: str,
    concurrency: int,
    batch: int,
    model: str,
    measurement_ms: int,
    windows: int,
    inputs: Path,
    out: Path,
    extra_args: tuple[str, ...] = (),
) -> list[str]:
    """The perf_analyzer command line: ``inputs`` the request data, ``out`` the CSV it writes."""
    return [
        str(binary()),
        "-m",
        model,
        "-i",
        "grpc",
        "-u",
        url,
        "-b",
        str(batch),
        f"--concurrency-range={concurrency}:{concurrency}",
        f"--measurement-interval={measurement_ms}",
        # A fixed number of windows, averaged: on a shared 2-core VM the default 10%
        # stability test can fail for minutes, and then perf_analyzer reports nothing.
        f"--max-trials={windows}",
        "--stability-percentage=100000",
        f"--input-data={inputs}",
        "-v",  # prints every window's throughput
        "-f",
        str(out),
        *extra_args,
    ]


def run_watched(cmd: list[str], timeout_s: float) -> tuple[str, int | None, float, float]:
    """Run ``cmd`` and sample its CPU time while it lives: (output, exit code, CPU s, wall s)."""
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd, env=environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    cpu = 0.0
    try:
        while proc.poll() is None:
            now = process_cpu_seconds(proc.pid)  # read while alive: a reaped process has none left
            if now is None:
                break
            cpu = now
            time.sleep(0.2)
            if time.monotonic() - start > timeout_s:
                proc.kill()
                raise PerfAnalyzerError(f"perf_analyzer ran past {timeout_s:.0f} s")
    finally:
        output = proc.communicate()[0]
    return output, proc.returncode, cpu, time.monotonic() - start


def run(
    url: str,
    concurrency: int,
    batch: int = 1,
    model: str = DEFAULT_MODEL,
    measurement_ms: int = 5000,
    windows: int = 3,
    timeout_s: float = 300.0,
    extra_args: tuple[str, ...] = (),
) -> PerfResult:
    """One perf_analyzer measurement at a fixed concurrency (closed loop, like the Locust users).

    The result is perf_analyzer's average over ``windows`` windows of ``measurement_ms``.
    """
    contract = contracts()[model]
    if batch > 1 and any(t.dtype == "BYTES" for t in contract.inputs):
        # Its data loader sends one element per BYTES input whatever -b says (then Triton rejects it).
        raise PerfAnalyzerError(f"perf_analyzer 2.51 cannot batch BYTES inputs ({model}, -b {batch})")
    with tempfile.TemporaryDirectory(prefix="perf_analyzer-") as tmp:
        out = Path(tmp) / "pa.csv"
        inputs = input_data(Path(tmp) / "inputs.json", model, batch)
        cmd = command(url, concurrency, batch, model, measurement_ms, windows, inputs, out, extra_args)
        output, returncode, cpu, wall = run_watched(cmd, timeout_s)
        passes = [float(x) for x in re.findall(r"Pass \[\d+\] throughput: ([\d.]+) infer/sec", output)]
        avg = re.search(r"Avg latency: (\d+) usec \(standard deviation", output)
        if not out.exists():
            raise PerfAnalyzerError(f"perf_analyzer failed (exit {returncode}):\n{output[-3000:]}")
        with out.open() as f:
            row = next(csv.DictReader(f))

    def ms(column: str) -> float:
        return float(row[column]) / 1000.0

    return PerfResult(
        concurrency=concurrency,
        batch=batch,
        images_per_s=float(row["Inferences/Second"]),
        p50_ms=ms("p50 latency"),
        p95_ms=ms("p95 latency"),
        p99_ms=ms("p99 latency"),
        avg_ms=float(avg.group(1)) / 1000.0 if avg else math.nan,
        client_cores=cpu / wall if wall > 0 else float("nan"),
        wall_s=wall,
        window_images_per_s=passes,
        command=" ".join(
            cmd[:1] + [c for c in cmd[1:] if not c.startswith("--input-data") and c != str(out)]
        ),
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8001")
    p.add_argument("--model", choices=sorted(contracts()), default=DEFAULT_MODEL)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--batch", type=int, default=1, help="images per request")
    p.add_argument("--measurement-ms", type=int, default=5000)
    opt = p.parse_args(argv)
    result = run(opt.url, opt.concurrency, opt.batch, opt.model, opt.measurement_ms)
    print(json.dumps(asdict(result), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
