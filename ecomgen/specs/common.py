"""Building blocks the served-model specs share."""

from __future__ import annotations

from ecomgen.spec import Batching, NetworkSpec, OptimizationProfile, QueuePolicy
from ecomgen_client.contracts import TensorSpec

HANDLERS = "ecomgen.serving.handlers"
TO_UINT8 = f"{HANDLERS}.convert:ToUint8"
FROM_UINT8 = f"{HANDLERS}.convert:FromUint8"
# Pipelines of a few steps: a queue delay per step adds up (ensemble 1.34x its steps with 2 ms
# per step, benchmarks/results/*-tryon.md); under load a step batches what queued meanwhile.
NO_DELAY_BATCHING = Batching(preferred_batch_sizes=(4, 8), max_queue_delay_us=0)
TEN_SECOND_QUEUE = QueuePolicy(max_queue_size=64, default_timeout_us=10_000_000)


def network(
    name: str,
    inputs: tuple[TensorSpec, ...],
    outputs: tuple[TensorSpec, ...],
    max_batch: int,
    opt_batch: int,
    batching: Batching,
    queue: QueuePolicy = TEN_SECOND_QUEUE,
) -> NetworkSpec:
    """A network whose only dynamic axis is the batch (TensorRT profile 1 / opt / max)."""
    return NetworkSpec(
        name=name,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=max_batch,
        profile=OptimizationProfile(min_batch=1, opt_batch=opt_batch, max_batch=max_batch),
        batching=batching,
        queue=queue,
    )


def rows(t: TensorSpec, n: int) -> TensorSpec:
    """``t`` with a leading dim of up to ``n`` rows: how a model without a batch axis carries the
    rows it hands to (or gets from) a batching network."""
    return TensorSpec(t.name, t.dtype, (-1, *t.dims), max_dims=(n, *t.dims), kind=t.kind)
