"""Typed specs of every served model: the single source of truth.

Export (ONNX dynamic axes), the TensorRT profile, ``config.pbtxt`` generation,
client-side validation, benchmark payloads and tests all read these objects.
This module depends on the standard library and numpy only, so the thin client
can ship it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Triton datatype name -> numpy dtype.
_NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "BYTES": np.object_,
}


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor, dims exclude the batch axis (-1 = variable)."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False
    # Inclusive value range that the server enforces (integers only).
    value_range: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in _NUMPY_DTYPES:
            raise ValueError(f"{self.name}: unknown Triton dtype {self.dtype!r}")

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_DTYPES[self.dtype])

    @property
    def config_dtype(self) -> str:
        """The ``DataType`` enum name used in ``config.pbtxt``."""
        return "TYPE_STRING" if self.dtype == "BYTES" else f"TYPE_{self.dtype}"

    def batched_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.dims)


@dataclass(frozen=True)
class DynamicBatching:
    preferred_batch_sizes: tuple[int, ...]
    max_queue_delay_us: int


@dataclass(frozen=True)
class QueuePolicy:
    """Bounded queue: overload is rejected instead of growing memory without limit."""

    max_queue_size: int
    default_timeout_us: int
    allow_timeout_override: bool = True


@dataclass(frozen=True)
class OptimizationProfile:
    """TensorRT profile over the batch axis; the other dims are static."""

    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ValueError(f"profile needs 1 <= min <= opt <= max, got {self}")

    def shapes(self, tensor: TensorSpec) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        if any(d < 0 for d in tensor.dims):
            raise ValueError(f"{tensor.name}: only the batch axis may be dynamic in a profile")
        return (
            tensor.batched_shape(self.min_batch),
            tensor.batched_shape(self.opt_batch),
            tensor.batched_shape(self.max_batch),
        )


@dataclass(frozen=True)
class NetworkSpec:
    """A network exported to ONNX and compiled to TensorRT (an internal step)."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    profile: OptimizationProfile
    batching: DynamicBatching
    queue: QueuePolicy
    gpu_instances: int = 1
    onnx_opset: int = 17
    # ONNX node-name substrings kept in FP32 inside an FP16 engine.
    fp32_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.profile.max_batch != self.max_batch_size:
            raise ValueError(
                f"{self.name}: TensorRT profile max batch {self.profile.max_batch} "
                f"!= max_batch_size {self.max_batch_size}"
            )

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.name)


@dataclass(frozen=True)
class ModelSpec:
    """A public model: its name and I/O are the contract on every target."""

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    batching: DynamicBatching
    queue: QueuePolicy
    network: NetworkSpec
    cpu_instances: int = 1
    cpu_threads: int = 2  # intra-op threads per instance
    # "openvino" or "onnxruntime", on the same model.onnx (benchmarks/roofline.py decides).
    cpu_runtime: str = "openvino"
    # OpenVINO's inference precision: "f32", or "bf16" where the CPU has bf16 hardware
    # (elsewhere OpenVINO runs f32); the parity gate's tolerance decides.
    cpu_precision: str = "f32"
    class_names: tuple[str, ...] = ()
    latent_dim: int = 0
    checkpoint: str = ""
    training_module: str = ""
    description: str = ""
    extra_parameters: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        if self.batching.preferred_batch_sizes and max(self.batching.preferred_batch_sizes) > (
            self.max_batch_size
        ):
            raise ValueError(f"{self.name}: preferred batch size above max_batch_size")
        if self.cpu_runtime not in ("openvino", "onnxruntime"):
            raise ValueError(f"{self.name}: unknown cpu_runtime {self.cpu_runtime!r}")
        if self.cpu_precision not in ("f32", "bf16") or (
            self.cpu_precision == "bf16" and self.cpu_runtime != "openvino"
        ):
            raise ValueError(f"{self.name}: cpu_precision {self.cpu_precision!r} needs openvino (f32|bf16)")

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.name)

    def class_id(self, cls: int | str) -> int:
        """Resolve a class name (case-insensitive) or id to a validated id."""
        if isinstance(cls, str):
            lowered = [c.lower() for c in self.class_names]
            if cls.lower() in lowered:
                return lowered.index(cls.lower())
            if cls.isdigit():
                cls = int(cls)
            else:
                raise ValueError(f"unknown class {cls!r}; expected one of {list(self.class_names)}")
        if not 0 <= int(cls) < len(self.class_names):
            raise ValueError(f"class_id {cls} out of range [0, {len(self.class_names) - 1}]")
        return int(cls)


def _by_name(tensors: tuple[TensorSpec, ...], name: str, owner: str) -> TensorSpec:
    for t in tensors:
        if t.name == name:
            return t
    raise KeyError(f"{owner} has no tensor {name!r}")


# --- product_gan -----------------------------------------------------------------

PRODUCT_CLASSES: tuple[str, ...] = (
    "Tshirts",
    "Shirts",
    "Tops",
    "Jeans",
    "Dresses",
    "Casual Shoes",
    "Heels",
    "Handbags",
    "Watches",
    "Sunglasses",
)
PRODUCT_IMAGE_HW = (64, 48)
PRODUCT_LATENT_DIM = 128
_INT64_MAX = 2**63 - 1

PRODUCT_GAN_GENERATOR = NetworkSpec(
    name="product_gan_generator",
    inputs=(
        TensorSpec("z", "FP32", (PRODUCT_LATENT_DIM,)),
        # One-hot rather than an index: TensorRT has mis-served batched Gather/Embedding.
        TensorSpec("class_onehot", "FP32", (len(PRODUCT_CLASSES),)),
    ),
    outputs=(TensorSpec("image", "FP32", (3, *PRODUCT_IMAGE_HW)),),
    max_batch_size=64,
    profile=OptimizationProfile(min_batch=1, opt_batch=32, max_batch=64),
    batching=DynamicBatching(preferred_batch_sizes=(16, 32, 64), max_queue_delay_us=2000),
    queue=QueuePolicy(max_queue_size=512, default_timeout_us=5_000_000),
    gpu_instances=2,
)

PRODUCT_GAN = ModelSpec(
    name="product_gan",
    description="Class-conditional 64x48 product-image GAN (SNGAN-style, conditional BN).",
    inputs=(
        TensorSpec("class_id", "INT32", (1,), value_range=(0, len(PRODUCT_CLASSES) - 1)),
        TensorSpec("seed", "INT64", (1,), value_range=(0, _INT64_MAX)),
    ),
    outputs=(TensorSpec("image", "UINT8", (*PRODUCT_IMAGE_HW, 3)),),
    max_batch_size=64,
    # From benchmarks.tune (results/2026-11-26-amd-epyc-2c-tune.md): 1 instance x 2 threads is
    # clearly best (2 cores); 2 ms delay gave the most images/s at c=32 without hurting c=1
    # (0 and 0.5 ms cost 10-20%; 5+ ms add latency at low load); preferred [64] won the last
    # stage and its confirmation by +3%, inside the +-8% noise, so it is a tie with [16, 32, 64].
    batching=DynamicBatching(preferred_batch_sizes=(64,), max_queue_delay_us=2000),
    queue=QueuePolicy(max_queue_size=512, default_timeout_us=5_000_000),
    network=PRODUCT_GAN_GENERATOR,
    cpu_instances=1,
    cpu_threads=2,
    # benchmarks/results/2026-11-27-amd-epyc-2c-roofline.md: OpenVINO bf16 +71% at the best
    # batch and +36% at batch 1 over fp32 on this avx512_bf16 CPU, PSNR 56.5 dB vs PyTorch
    # fp32 (gate: >= 40 dB); batch-independent (a seed gives the same pixels at any batch).
    cpu_precision="bf16",
    class_names=PRODUCT_CLASSES,
    latent_dim=PRODUCT_LATENT_DIM,
    checkpoint="checkpoints/product_gan.safetensors",
    training_module="training.product_gan",
)

SPECS: dict[str, ModelSpec] = {s.name: s for s in (PRODUCT_GAN,)}


# --- tryon -----------------------------------------------------------------------


@dataclass(frozen=True)
class EnsembleSpec:
    """A public model served as a Triton ensemble of Python steps and exported networks.

    ``networks`` run in order between the ``<name>_pre`` and ``<name>_post`` Python steps;
    each is an ONNX model (cpu target: OpenVINO/ONNX Runtime in the Python backend) or a
    TensorRT plan (gpu target), with its own dynamic batcher.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    batching: DynamicBatching  # the Python pre/post steps
    queue: QueuePolicy
    networks: tuple[NetworkSpec, ...]
    # Bound on requests inside the ensemble (Triton >= 2.63 / 25.11 only, see README).
    max_inflight_requests: int = 0
    cpu_instances: int = 1
    cpu_threads: int = 2
    cpu_runtime: str = "openvino"
    min_side: int = 64
    max_side: int = 2048
    checkpoint_dir: str = "checkpoints"
    training_module: str = ""
    description: str = ""
    # The encoded-image twin: same pipeline, JPEG/PNG bytes in and PNG bytes out.
    bytes_model: str = ""

    def __post_init__(self) -> None:
        if self.cpu_runtime not in ("openvino", "onnxruntime"):
            raise ValueError(f"{self.name}: unknown cpu_runtime {self.cpu_runtime!r}")
        for net in self.networks:
            if net.max_batch_size > self.max_batch_size:
                raise ValueError(f"{self.name}: {net.name} batches more than the ensemble")

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.name)

    def network(self, name: str) -> NetworkSpec:
        for net in self.networks:
            if net.name == name:
                return net
        raise KeyError(f"{self.name} has no network {name!r}")


TRYON_HW = (256, 192)
TRYON_REGIONS = 5  # background, head, upper clothes, arms, lower body
# No queue delay: with five steps in a chain, a 2 ms delay cost 5 x 2.1 ms per request at low
# load (ensemble 1.34x the sum of its steps, benchmarks/results/*-tryon.md), while under load a
# ~40 ms pipeline batches whatever queued during the previous execution anyway.
_TRYON_BATCHING = DynamicBatching(preferred_batch_sizes=(4, 8), max_queue_delay_us=0)
_TRYON_QUEUE = QueuePolicy(max_queue_size=64, default_timeout_us=10_000_000)


def _tryon_net(name: str, inputs: tuple[TensorSpec, ...], outputs: tuple[TensorSpec, ...]) -> NetworkSpec:
    return NetworkSpec(
        name=name,
        inputs=inputs,
        outputs=outputs,
        max_batch_size=8,
        profile=OptimizationProfile(min_batch=1, opt_batch=4, max_batch=8),
        batching=_TRYON_BATCHING,
        queue=_TRYON_QUEUE,
        gpu_instances=1,
    )


_PERSON = TensorSpec("person", "FP32", (3, *TRYON_HW))
_GARMENT = TensorSpec("garment", "FP32", (3, *TRYON_HW))
_GARMENT_MASK = TensorSpec("garment_mask", "FP32", (1, *TRYON_HW))
_PARSE = TensorSpec("parse", "FP32", (TRYON_REGIONS, *TRYON_HW))
_WARPED = TensorSpec("warped_garment", "FP32", (3, *TRYON_HW))
_WARPED_MASK = TensorSpec("warped_mask", "FP32", (1, *TRYON_HW))

TRYON_PARSER = _tryon_net("tryon_parser", (_PERSON,), (_PARSE,))
TRYON_WARP = _tryon_net("tryon_warp", (_GARMENT, _GARMENT_MASK, _PERSON, _PARSE), (_WARPED, _WARPED_MASK))
TRYON_SYNTHESIS = _tryon_net(
    "tryon_synthesis",
    (_PERSON, _PARSE, _WARPED, _WARPED_MASK),
    (TensorSpec("image", "FP32", (3, *TRYON_HW)), TensorSpec("mask", "FP32", (1, *TRYON_HW))),
)

TRYON = EnsembleSpec(
    name="tryon",
    description=(
        "Virtual try-on at 256x192: person photo + garment photo -> the person wearing it "
        "(parser -> appearance-flow warp -> synthesis). Research weights trained on VITON."
    ),
    inputs=(TensorSpec("person", "UINT8", (-1, -1, 3)), TensorSpec("garment", "UINT8", (-1, -1, 3))),
    outputs=(
        TensorSpec("image", "UINT8", (*TRYON_HW, 3)),
        TensorSpec("warped_garment", "UINT8", (*TRYON_HW, 3), optional=True),
        TensorSpec("mask", "UINT8", TRYON_HW, optional=True),
    ),
    max_batch_size=8,
    batching=_TRYON_BATCHING,
    queue=_TRYON_QUEUE,
    networks=(TRYON_PARSER, TRYON_WARP, TRYON_SYNTHESIS),
    max_inflight_requests=16,
    training_module="training.tryon",
    bytes_model="tryon_bytes",
)

TRYON_BYTES_INPUTS = (TensorSpec("person", "BYTES", (1,)), TensorSpec("garment", "BYTES", (1,)))
TRYON_BYTES_OUTPUTS = (TensorSpec("image", "BYTES", (1,)),)

ENSEMBLES: dict[str, EnsembleSpec] = {s.name: s for s in (TRYON,)}
