"""Client-side balancing over two real servers, and failover when one dies (issue: Kubernetes).

A headless Service hands the client every pod's address; the client spreads requests
round robin and moves on when a pod dies. Here the pods are two embedded servers on one
machine, with tiny product_gan weights.
"""

from __future__ import annotations

import asyncio
import dataclasses
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from ecomgen.registry import Registry
from ecomgen.specs.product_gan import PRODUCT_GAN
from ecomgen_client import AsyncProductClient, ProductClient
from export.onnx import export_model, install_onnx, tiny_modules
from export.repository import write_repository
from tests.integration.conftest import start_server

pytestmark = pytest.mark.integration


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    model = dataclasses.replace(PRODUCT_GAN, cpu_runtime="onnxruntime")
    registry = Registry([model])
    write_repository(tmp_path, "cpu", registry)
    export_model(model, tmp_path / "onnx", tiny_modules(model))
    install_onnx(tmp_path, tmp_path / "onnx", registry)
    return tmp_path


def executions(url: str) -> int:
    with grpcclient.InferenceServerClient(url) as c:
        return int(c.get_inference_statistics("product_gan").model_stats[0].inference_count)


def test_requests_spread_over_both_servers_and_survive_one_dying(repository):
    with start_server(repository) as a, start_server(repository) as b:
        urls = [a.grpc_url, b.grpc_url]
        before = [executions(u) for u in urls]  # the load-time warm-up request counts too
        with ProductClient(urls, retries=3, backoff_s=0.05) as client:
            for seed in range(20):
                client.generate_products(seed % 10, [seed])
        # Triton counts a request in its statistics after it has answered it: on a loaded machine
        # the last count can trail the last answer, so wait for the counter, not a fixed time.
        deadline = time.monotonic() + 10
        counts = [executions(u) - n for u, n in zip(urls, before, strict=True)]
        while sum(counts) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
            counts = [executions(u) - n for u, n in zip(urls, before, strict=True)]
        assert sum(counts) == 20 and min(counts) >= 8, counts  # round robin, not pinned to one

        async def load() -> tuple[list[object], float]:
            async with AsyncProductClient(urls, retries=4, backoff_s=0.05, timeout_s=20) as client:

                async def one(i: int) -> object:
                    try:
                        return await client.generate_products(i % 10, [i])
                    except Exception as e:  # counted below
                        return e

                tasks = [asyncio.ensure_future(one(i)) for i in range(30)]
                await asyncio.sleep(0.05)
                killed_at = time.monotonic()
                assert a.process is not None
                a.process.send_signal(signal.SIGKILL)  # one pod dies mid-load
                a.process.wait(timeout=10)  # dead before the next 90 start: they can only reach b
                tasks += [asyncio.ensure_future(one(i)) for i in range(30, 120)]
                return await asyncio.gather(*tasks), killed_at

        results, _ = asyncio.run(load())
        failures = [r for r in results if not isinstance(r, np.ndarray)]
        # In-flight requests on the dead server come back UNAVAILABLE and are retried on the other.
        assert not failures, failures[:3]
        assert executions(b.grpc_url) - before[1] >= counts[1] + 90
