"""Building blocks the served-model specs share."""

from __future__ import annotations

from ecomgen.spec import Batching, QueuePolicy

HANDLERS = "ecomgen.serving.handlers"
TO_UINT8 = f"{HANDLERS}.convert:ToUint8"
FROM_UINT8 = f"{HANDLERS}.convert:FromUint8"
# Pipelines of a few steps: a queue delay per step adds up (ensemble 1.34x its steps with 2 ms
# per step, benchmarks/results/*-tryon.md); under load a step batches what queued meanwhile.
NO_DELAY_BATCHING = Batching(preferred_batch_sizes=(4, 8), max_queue_delay_us=0)
TEN_SECOND_QUEUE = QueuePolicy(max_queue_size=64, default_timeout_us=10_000_000)
