"""tryon and tryon_bytes: a person photo and a garment photo -> the person wearing the garment.

Both are ensembles of the same four networks (parser -> layout -> TPS + appearance-flow
warp -> synthesis) on both targets; they differ only in their first and last Python steps.
"""

from __future__ import annotations

import dataclasses

from ecomgen.models import tryon as model
from ecomgen.spec import NetworkSpec, NetworkStep, PythonStep, ServedModel
from ecomgen.specs.common import HANDLERS, NO_DELAY_BATCHING, TEN_SECOND_QUEUE, TO_UINT8, network
from ecomgen_client import contracts
from ecomgen_client.contracts import TRYON_HW, TensorSpec

REGIONS = model.NUM_REGIONS  # background, head, upper clothes, arms, lower body
MODULE = "ecomgen.models.tryon"
CHECKPOINTS = ("tryon.json", *(f"tryon_{name}.safetensors" for name in model.NETWORKS))


def _net(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> NetworkSpec:
    return network(name, inputs, outputs, max_batch=8, opt_batch=4, batching=NO_DELAY_BATCHING)


PERSON = TensorSpec("person", "FP32", (3, *TRYON_HW), kind="image")
GARMENT = TensorSpec("garment", "FP32", (3, *TRYON_HW), kind="image")
GARMENT_MASK = TensorSpec("garment_mask", "FP32", (1, *TRYON_HW), kind="mask")
PARSE = TensorSpec("parse", "FP32", (REGIONS, *TRYON_HW), kind="mask")
LAYOUT = TensorSpec("layout", "FP32", (model.NUM_LAYOUT, *TRYON_HW), kind="mask")
WARPED = TensorSpec("warped_garment", "FP32", (3, *TRYON_HW), kind="image")
WARPED_MASK = TensorSpec("warped_mask", "FP32", (1, *TRYON_HW), kind="mask")
IMAGE = TensorSpec("image", "FP32", (3, *TRYON_HW), kind="image")
MASK = TensorSpec("mask", "FP32", (1, *TRYON_HW), kind="mask")

PARSER = _net(model.PARSER, (PERSON,), (PARSE,))
LAYOUT_NET = _net(model.LAYOUT, (PERSON, PARSE, GARMENT, GARMENT_MASK), (LAYOUT,))
# Bilinear sampling of the gate's random-noise garments at TPS + flow coordinates: ONNX Runtime and
# PyTorch differ by up to 1.7e-3 (0.2 of a uint8 level) where a coordinate lands on a pixel edge.
WARP = dataclasses.replace(
    _net(model.WARP, (GARMENT, GARMENT_MASK, PERSON, PARSE, LAYOUT), (WARPED, WARPED_MASK)), parity_atol=5e-3
)
SYNTHESIS = _net(model.SYNTHESIS, (PERSON, PARSE, LAYOUT, WARPED, WARPED_MASK), (IMAGE, MASK))
NETWORK_STEPS = tuple(NetworkStep(n) for n in (PARSER, LAYOUT_NET, WARP, SYNTHESIS))
PREPARED = (PERSON, GARMENT, GARMENT_MASK)

_COMMON = {
    "batching": NO_DELAY_BATCHING,
    "queue": TEN_SECOND_QUEUE,
    "module": MODULE,
    "training": "training.tryon",
    "checkpoints": CHECKPOINTS,
    # Bound on requests inside the ensemble; the field exists only from Triton 2.63 (see README).
    "max_inflight_requests": 16,
    # On CPU a row costs the same in a batch or alone, and 2.51's batcher stalled queued requests
    # for up to 500 ms: no dynamic batcher there (benchmarks/results/*-tryon-batcher.md).
    "cpu_dynamic_batching": False,
}

TRYON = ServedModel(
    contract=contracts.TRYON,
    steps=(
        PythonStep("tryon_pre", f"{HANDLERS}.tryon:Preprocess", contracts.TRYON.inputs, PREPARED),
        *NETWORK_STEPS,
        PythonStep("tryon_post", TO_UINT8, (IMAGE, WARPED, MASK), contracts.TRYON.outputs),
    ),
    **_COMMON,  # type: ignore[arg-type]
)

TRYON_BYTES = ServedModel(
    contract=contracts.TRYON_BYTES,
    steps=(
        PythonStep("tryon_decode", f"{HANDLERS}.tryon:Decode", contracts.TRYON_BYTES.inputs, PREPARED),
        *NETWORK_STEPS,
        PythonStep("tryon_encode", f"{HANDLERS}.tryon:Encode", (IMAGE,), contracts.TRYON_BYTES.outputs),
    ),
    **_COMMON,  # type: ignore[arg-type]
)
