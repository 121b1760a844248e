"""Served latency of one kind of request against a running server, for before/after comparisons.

Sends the benchmark payload of a model (``benchmarks/payloads.py``), optionally with the product
uploaded as a photo instead of generated (``--upload``), ``--requests`` times at ``--concurrency``,
and records p50/p90/p99 latency and requests/s. Only gRPC and the payload: it runs against any
version of the server, so two checkouts can be compared on one machine, one after the other:

    python -m benchmarks.latency --url 127.0.0.1:8001 --model ad_creative --upload --label before \\
        --json /tmp/before.json
    python -m benchmarks.latency --url 127.0.0.1:9001 --model ad_creative --upload --label after \\
        --json /tmp/after.json
    python -m benchmarks.latency --compare /tmp/before.json /tmp/after.json --out benchmarks/results/X.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient

from benchmarks.payloads import infer_inputs, payload, product_jpeg
from benchmarks.report import table
from ecomgen.hostinfo import machine_description

UPLOAD_SIZE = (1024, 768)  # a shop photo: 1024 px on its long side


def inputs_for(model: str, upload: bool) -> dict[str, np.ndarray]:
    p = payload(model, index=0)
    arrays = dict(p.inputs)
    if upload:
        arrays = {k: v for k, v in arrays.items() if k not in ("class_id", "seed")}
        photo = np.empty(1, dtype=object)
        photo[0] = product_jpeg(0, UPLOAD_SIZE)
        arrays["product"] = photo
    return arrays


def measure(url: str, model: str, upload: bool, requests: int, concurrency: int) -> dict[str, Any]:
    arrays = inputs_for(model, upload)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    todo = iter(range(requests))

    def worker() -> None:
        with grpcclient.InferenceServerClient(url) as c:
            try:
                c.infer(model, infer_inputs(arrays, model), client_timeout=120)  # warm this connection
            except Exception as e:  # a refused warm-up is the run's result, not a dead thread
                with lock:
                    errors.append(f"warm-up: {str(e)[:200]}")
                return
            while True:
                with lock:
                    if next(todo, None) is None:
                        return
                start = time.perf_counter()
                try:
                    c.infer(model, infer_inputs(arrays, model), client_timeout=120)
                    with lock:
                        latencies.append(time.perf_counter() - start)
                except Exception as e:  # counted and reported, not hidden
                    with lock:
                        errors.append(str(e)[:200])

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    q = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [0.0] * 99
    return {
        "model": model,
        "upload": upload,
        "requests": requests,
        "concurrency": concurrency,
        "ok": len(latencies),
        "errors": errors[:5],
        "error_count": len(errors),
        "p50_ms": q[49] * 1e3,
        "p90_ms": q[89] * 1e3,
        "p99_ms": q[98] * 1e3,
        "requests_per_s": len(latencies) / wall,
        "machine": machine_description(),
    }


def compare(paths: list[Path]) -> str:
    runs = [json.loads(p.read_text()) for p in paths]
    rows = [
        (r["label"], r.get("commit", ""), r["model"], "uploaded photo" if r["upload"] else "generated",
         r["concurrency"], f"{r['p50_ms']:.0f}", f"{r['p90_ms']:.0f}", f"{r['p99_ms']:.0f}",
         f"{r['requests_per_s']:.2f}", r["error_count"])
        for r in runs
    ]  # fmt: skip
    return "\n".join(table(COLUMNS, rows, "llllrrrrrr")) + "\n"


COLUMNS = (
    "label", "commit", "model", "product", "concurrency", "p50 ms", "p90 ms", "p99 ms", "requests/s",
    "errors",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="127.0.0.1:8001")
    p.add_argument("--model", default="ad_creative")
    p.add_argument("--upload", action="store_true", help="send the product as an uploaded photo")
    p.add_argument("--requests", type=int, default=40)
    p.add_argument("--concurrency", type=int, default=1)
    p.add_argument("--label", default="")
    p.add_argument("--commit", default="")
    p.add_argument("--json", type=Path)
    p.add_argument("--compare", nargs="+", type=Path, help="JSON files of earlier runs: print a table")
    opt = p.parse_args(argv)
    if opt.compare:
        print(compare(opt.compare))
        return 0
    result = measure(opt.url, opt.model, opt.upload, opt.requests, opt.concurrency)
    result.update(label=opt.label, commit=opt.commit, command=" ".join(sys.argv))
    text = json.dumps(result, indent=2)
    if opt.json:
        opt.json.write_text(text + "\n")
    print(text)
    return 0 if result["error_count"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
