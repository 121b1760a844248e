"""Bounded queues and one deadline per request (Triton's L0_model_queue, on ecomgen's models).

* A full queue and an expired queue wait are rejected at once, and the client tells both
  apart from a server that is down (findings 8: a queue timeout arrived as a retryable
  UNAVAILABLE).
* An ensemble request has one deadline across all its steps: the first Python step stamps
  it from the request's timeout (and refuses it at once when the ensemble could not answer in
  time), every later step drops expired work, so a request is answered within its timeout plus
  one batch of the slowest step, measured in the same run (finding 8: tryon p99 29.5 s with a
  10 s timeout per step).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc.aio as aioclient
from tritonclient.utils import InferenceServerException

from ecomgen.registry import Registry
from ecomgen.spec import QueuePolicy
from ecomgen.specs.product_gan import PRODUCT_GAN
from ecomgen.specs.tryon import TRYON as REGISTRY_TRYON
from ecomgen_client import AsyncProductClient, QueueFullError, QueueTimeoutError, ServerOverloadedError
from export.onnx import export_model, install_onnx, tiny_modules
from export.repository import write_repository
from tests.integration.conftest import start_server

pytestmark = pytest.mark.integration


def queue_server(root: Path, queue: QueuePolicy):  # type: ignore[no-untyped-def]
    """product_gan (tiny weights) behind ``queue``."""
    model = dataclasses.replace(PRODUCT_GAN, queue=queue, cpu_runtime="onnxruntime")
    registry = Registry([model])
    write_repository(root, "cpu", registry)
    export_model(model, root / "onnx", tiny_modules(model))
    install_onnx(root, root / "onnx", registry)
    return start_server(root)


async def burst(url: str, n: int, rows: int, **client: object) -> list[object]:
    async with AsyncProductClient(url, retries=0, **client) as c:  # type: ignore[arg-type]

        async def one(i: int) -> object:
            try:
                return await c.generate_products(i % 10, list(range(i * rows, (i + 1) * rows)))
            except Exception as e:  # collected and classified below
                return e

        return await asyncio.gather(*(one(i) for i in range(n)))


def test_a_full_queue_rejects_at_once_and_says_so(tmp_path):
    with queue_server(tmp_path, QueuePolicy(max_queue_size=2, default_timeout_us=30_000_000)) as server:
        results = asyncio.run(burst(server.grpc_url, 40, 64, timeout_s=60))
    full = [r for r in results if isinstance(r, QueueFullError)]
    done = [r for r in results if isinstance(r, np.ndarray)]
    assert full and done, [type(r).__name__ for r in results]
    assert len(full) + len(done) == len(results), [r for r in results if isinstance(r, Exception)][:3]
    assert isinstance(full[0], ServerOverloadedError) and "Exceeds maximum queue size" in str(full[0])


def test_a_queue_timeout_is_an_overload_not_an_outage(tmp_path):
    policy = QueuePolicy(max_queue_size=1000, default_timeout_us=1_000, allow_timeout_override=False)
    with queue_server(tmp_path, policy) as server:
        results = asyncio.run(burst(server.grpc_url, 40, 64, timeout_s=None))
    expired = [r for r in results if isinstance(r, QueueTimeoutError)]
    assert expired, [type(r).__name__ for r in results]
    assert "Request timeout expired" in str(expired[0])
    assert all(isinstance(r, np.ndarray | QueueTimeoutError) for r in results)


def batch_times(url: str, steps: list[str]) -> dict[tuple[str, int], tuple[int, int]]:
    """Per step and batch size: (executions, ns computing them: input + infer + output), from
    Triton's per-batch-size statistics."""
    import tritonclient.grpc as grpcclient

    out = {}
    with grpcclient.InferenceServerClient(url) as c:
        for name in steps:
            (st,) = c.get_inference_statistics(name, as_json=True)["model_stats"]
            for b in st.get("batch_stats", []):
                ns = sum(int(b[k].get("ns", 0)) for k in ("compute_input", "compute_infer", "compute_output"))
                out[name, int(b["batch_size"])] = (int(b["compute_infer"].get("count", 0)), ns)
    return out


def full_batch_s(before: dict, after: dict) -> float:
    """One batch of the slowest step, between two snapshots: per step, the mean time of an
    execution at the largest batch size it ran in between."""
    ran: dict[str, tuple[int, float]] = {}
    for (step, size), (count, ns) in after.items():
        count0, ns0 = before.get((step, size), (0, 0))
        if count > count0 and size >= ran.get(step, (0, 0.0))[0]:
            ran[step] = (size, (ns - ns0) / (count - count0) / 1e9)
    return max(t for _, t in ran.values())


def test_one_deadline_bounds_an_ensemble_request_whatever_its_steps(served, pairs):
    """Overload tryon with requests that carry a 1 s timeout and wait forever on the client side:
    every answer (image, refusal at the door, or a deadline dropped in a later step) comes within
    one timeout plus one batch of the ensemble's slowest step, as measured in this run on this
    host (Triton's statistics), plus one unloaded request's latency for the way in and out. With
    a queue timeout per step it could take five timeouts; with a long queue before the door, whose
    wait the deadline stamped there does not count, it took up to two (fixed by bounding the
    door's queue to the requests the ensemble admits)."""
    import tritonclient.grpc as grpcclient

    timeout_s, n = 1.0, 80
    steps = [s.model_name for s in REGISTRY_TRYON.steps]

    def inputs(i: int, mod: object) -> list[object]:
        ins = []
        for name, arr in (("person", pairs.person[i % 4][None]), ("garment", pairs.cloth[(i + 1) % 4][None])):
            t = mod.InferInput(name, list(arr.shape), "UINT8")  # type: ignore[attr-defined]
            t.set_data_from_numpy(arr)
            ins.append(t)
        return ins

    with grpcclient.InferenceServerClient(served.url) as c:
        alone = []
        for i in range(3):
            start = time.perf_counter()
            c.infer("tryon", inputs(i, grpcclient))
            alone.append(time.perf_counter() - start)

    before = batch_times(served.url, steps)

    async def one(c: aioclient.InferenceServerClient, i: int) -> tuple[float, object]:
        start = time.perf_counter()
        try:
            result: object = await c.infer("tryon", inputs(i, aioclient), timeout=int(timeout_s * 1e6))
        except InferenceServerException as e:
            result = e
        return time.perf_counter() - start, result

    async def run() -> list[tuple[float, object]]:
        async with aioclient.InferenceServerClient(served.url) as c:
            return await asyncio.gather(*(one(c, i) for i in range(n)))

    results = asyncio.run(run())
    batch_s = full_batch_s(before, batch_times(served.url, steps))
    latencies = sorted(t for t, _ in results)
    errors = [r.message() for _, r in results if isinstance(r, InferenceServerException)]
    ok = [r for _, r in results if not isinstance(r, InferenceServerException)]
    assert ok, errors[:3]
    assert errors, "the burst did not overload the ensemble; raise n"
    overload = ("timeout expired", "deadline exceeded", "Exceeds maximum queue size")
    assert all(any(o in e for o in overload) for e in errors), sorted(set(errors))[:5]
    bound = timeout_s + batch_s + max(alone)
    assert latencies[-1] <= bound, (
        f"slowest answer {latencies[-1]:.2f} s > {timeout_s} s + one batch of the slowest step "
        f"({batch_s:.3f} s) + an unloaded request ({max(alone):.3f} s); slowest: {latencies[-5:]}"
    )
