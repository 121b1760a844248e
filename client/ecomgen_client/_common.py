"""Transport-free logic shared by the sync and async clients: validation, batching, retries."""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import tritonclient.grpc as grpcclient

from .errors import EcomgenError, InvalidInputError, ServerError, ServerUnavailableError
from .specs import ENSEMBLES, SPECS, EnsembleSpec, ModelSpec, TensorSpec

# Anything with a public contract: a single model or an ensemble.
ServedSpec = ModelSpec | EnsembleSpec

Array = npt.NDArray[Any]
Seeds = Sequence[int] | Array

CLASS_INPUT = "class_id"
SEED_INPUT = "seed"
IMAGE_OUTPUT = "image"
CLASS_NAMES_PARAMETER = "class_names"


class InferResultLike(Protocol):
    """What the clients need from ``tritonclient.grpc.InferResult`` (lets tests fake it)."""

    def as_numpy(self, name: str) -> Array | None: ...


def resolve_spec(spec: str | ServedSpec) -> ServedSpec:
    if isinstance(spec, ModelSpec | EnsembleSpec):
        return spec
    known: dict[str, ServedSpec] = {**SPECS, **ENSEMBLES}
    try:
        return known[spec]
    except KeyError:
        raise InvalidInputError(f"unknown model {spec!r}; known models: {sorted(known)}") from None


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` extra attempts after the first, only for UNAVAILABLE (down or overloaded)."""

    retries: int = 3
    backoff_s: float = 0.1

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.backoff_s < 0:
            raise ValueError(f"backoff_s must be >= 0, got {self.backoff_s}")

    def should_retry(self, error: EcomgenError, attempt: int) -> bool:
        """``attempt`` counts from 0; other errors would fail the same way again."""
        return isinstance(error, ServerUnavailableError) and attempt < self.retries

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Exponential backoff with "equal jitter": in [d/2, d] for d = backoff_s * 2**attempt.

        Jitter keeps many clients that failed together from retrying in lockstep.
        """
        d = self.backoff_s * 2.0**attempt
        uniform = rng.uniform if rng is not None else random.uniform
        return d / 2 + uniform(0.0, d / 2)

    def final(self, error: EcomgenError, attempt: int) -> EcomgenError:
        """The error to raise once we stop; says how often UNAVAILABLE was retried."""
        if isinstance(error, ServerUnavailableError) and attempt > 0:
            return ServerUnavailableError(
                f"{error.message} (gave up after {attempt + 1} attempts)", status=error.status
            )
        return error


def check_timeout(timeout_s: float | None) -> float | None:
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError(f"timeout_s must be > 0 or None, got {timeout_s}")
    return timeout_s


def _dtype_ok(tensor: TensorSpec, arr: Array) -> bool:
    if tensor.dtype == "BYTES":
        return arr.dtype.kind in "OS"
    return arr.dtype == tensor.numpy_dtype


def _check_range(spec: ServedSpec, tensor: TensorSpec, arr: Array) -> None:
    if tensor.value_range is None or arr.size == 0 or arr.dtype.kind not in "iu":
        return
    lo, hi = tensor.value_range
    # Python ints: comparing int64 and uint64 extremes in numpy can go through float.
    got_lo, got_hi = int(arr.min()), int(arr.max())
    if got_lo < lo or got_hi > hi:
        bad = got_lo if got_lo < lo else got_hi
        raise InvalidInputError(f"{spec.name}: input {tensor.name!r} value {bad} out of range [{lo}, {hi}]")


def validate_inputs(spec: ServedSpec, inputs: Mapping[str, Array]) -> int:
    """Check names, dtypes, shapes and value ranges against the spec; return the batch size.

    Dtypes must match exactly: silently casting (e.g. float seeds) would hide caller bugs.
    """
    known = {t.name for t in spec.inputs}
    unknown = sorted(set(inputs) - known)
    if unknown:
        raise InvalidInputError(f"{spec.name}: unknown inputs {unknown}; expected {sorted(known)}")
    batched = spec.max_batch_size > 0
    batch_sizes: dict[str, int] = {}
    for tensor in spec.inputs:
        if tensor.name not in inputs:
            if not tensor.optional:
                raise InvalidInputError(f"{spec.name}: missing required input {tensor.name!r}")
            continue
        arr = inputs[tensor.name]
        if not isinstance(arr, np.ndarray):
            raise InvalidInputError(
                f"{spec.name}: input {tensor.name!r} must be a numpy array, got {type(arr).__name__}"
            )
        if not _dtype_ok(tensor, arr):
            raise InvalidInputError(
                f"{spec.name}: input {tensor.name!r} has dtype {arr.dtype}, expected {tensor.numpy_dtype}"
            )
        expected = ("N", *tensor.dims) if batched else tensor.dims
        fits = len(arr.shape) == len(expected) and all(
            e == "N" or (isinstance(e, int) and (e < 0 or e == s))
            for e, s in zip(expected, arr.shape, strict=True)
        )
        if not fits:
            shown = "[" + ", ".join("-1" if e == -1 else str(e) for e in expected) + "]"
            raise InvalidInputError(
                f"{spec.name}: input {tensor.name!r} shape {list(arr.shape)} does not match {shown}"
            )
        if batched:
            batch_sizes[tensor.name] = arr.shape[0]
        _check_range(spec, tensor, arr)
    if not batched:
        return 1
    sizes = set(batch_sizes.values())
    if len(sizes) > 1:
        raise InvalidInputError(f"{spec.name}: inputs disagree on the batch size: {batch_sizes}")
    batch = sizes.pop() if sizes else 0
    if batch == 0:
        raise InvalidInputError(f"{spec.name}: empty batch")
    return batch


def chunk_slices(batch: int, max_batch_size: int) -> list[slice]:
    """Split ``batch`` rows into consecutive requests of at most ``max_batch_size`` (0 = no batching)."""
    if batch <= 0:
        return []
    if max_batch_size <= 0:
        return [slice(0, batch)]
    return [slice(i, min(i + max_batch_size, batch)) for i in range(0, batch, max_batch_size)]


def product_inputs(spec: ModelSpec, cls: int | str, seeds: Seeds) -> dict[str, Array]:
    """Turn a class (name or id) and seeds into the batched ``class_id`` / ``seed`` inputs."""
    if isinstance(cls, bool) or not isinstance(cls, int | str | np.integer):
        raise InvalidInputError(f"class must be a name or an int id, got {type(cls).__name__}")
    try:
        class_id = spec.class_id(cls if isinstance(cls, str) else int(cls))
    except ValueError as exc:
        raise InvalidInputError(f"{spec.name}: {exc}") from None
    seed_spec = spec.input(SEED_INPUT)
    try:
        raw = np.asarray(seeds)
    except (OverflowError, ValueError) as exc:
        raise InvalidInputError(f"{spec.name}: seeds are not integers: {exc}") from None
    if raw.ndim != 1:
        raise InvalidInputError(f"{spec.name}: seeds must be a flat sequence, got shape {list(raw.shape)}")
    if raw.size == 0:
        raise InvalidInputError(f"{spec.name}: no seeds given")
    if raw.dtype.kind not in "iu":
        # Includes object arrays, which is what numpy makes of ints beyond 64 bits.
        raise InvalidInputError(f"{spec.name}: seeds must be integers, got dtype {raw.dtype}")
    # Check the range before the cast: uint64 above INT64_MAX would wrap to negative.
    _check_range(spec, seed_spec, raw)
    n = raw.shape[0]
    class_spec = spec.input(CLASS_INPUT)
    return {
        CLASS_INPUT: np.full(class_spec.batched_shape(n), class_id, dtype=class_spec.numpy_dtype),
        SEED_INPUT: raw.astype(seed_spec.numpy_dtype).reshape(seed_spec.batched_shape(n)),
    }


@dataclass(frozen=True)
class PreparedRequest:
    """One gRPC request: serialized inputs for ``batch`` rows plus the outputs to return."""

    inputs: list[grpcclient.InferInput]
    outputs: list[grpcclient.InferRequestedOutput]
    batch: int


def plan_chunks(spec: ServedSpec, inputs: Mapping[str, Array]) -> list[slice | None]:
    """Validate ``inputs`` and return the row ranges to send (None: a model without batching)."""
    batch = validate_inputs(spec, inputs)
    if spec.max_batch_size <= 0:
        return [None]
    return list(chunk_slices(batch, spec.max_batch_size))


def build_request(
    spec: ServedSpec,
    inputs: Mapping[str, Array],
    rows: slice | None,
    requested: Sequence[str] | None = None,
) -> PreparedRequest:
    """Serialize rows ``rows`` of every given input; built per chunk so big batches aren't copied twice.

    ``requested``: the outputs to ask for (default: all of the spec's).
    """
    infer_inputs = []
    batch = 1
    for tensor in spec.inputs:
        if tensor.name not in inputs:
            continue
        arr = inputs[tensor.name]
        if rows is not None:
            arr = arr[rows]
            batch = arr.shape[0]
        arr = np.ascontiguousarray(arr)
        infer_input = grpcclient.InferInput(tensor.name, list(arr.shape), tensor.dtype)
        infer_input.set_data_from_numpy(arr)
        infer_inputs.append(infer_input)
    names = [t.name for t in spec.outputs] if requested is None else list(requested)
    unknown = sorted(set(names) - {t.name for t in spec.outputs})
    if unknown:
        raise InvalidInputError(f"{spec.name}: unknown outputs {unknown}")
    outputs = [grpcclient.InferRequestedOutput(n) for n in names]
    return PreparedRequest(infer_inputs, outputs, batch)


def read_outputs(
    spec: ServedSpec, result: InferResultLike, batch: int, requested: Sequence[str] | None = None
) -> dict[str, Array]:
    """Extract every requested output and check it against the spec, so contract drift fails loudly."""
    out: dict[str, Array] = {}
    batched = spec.max_batch_size > 0
    for tensor in spec.outputs:
        if requested is not None and tensor.name not in requested:
            continue
        arr = result.as_numpy(tensor.name)
        if arr is None:
            if tensor.optional:
                continue
            raise ServerError(f"{spec.name}: response has no output {tensor.name!r}")
        if tensor.dtype != "BYTES" and arr.dtype != tensor.numpy_dtype:
            raise ServerError(
                f"{spec.name}: output {tensor.name!r} dtype {arr.dtype} != {tensor.numpy_dtype}"
            )
        expected = tensor.batched_shape(batch) if batched else tensor.dims
        if len(arr.shape) != len(expected) or any(
            e >= 0 and e != s for e, s in zip(expected, arr.shape, strict=True)
        ):
            raise ServerError(
                f"{spec.name}: output {tensor.name!r} shape {list(arr.shape)} != expected {list(expected)}"
            )
        out[tensor.name] = arr
    return out


def concat_outputs(parts: Sequence[dict[str, Array]]) -> dict[str, Array]:
    if len(parts) == 1:
        return parts[0]
    return {name: np.concatenate([p[name] for p in parts], axis=0) for name in parts[0]}


def parse_class_names(config: Mapping[str, Any], fallback: Sequence[str]) -> tuple[str, ...]:
    """Read the JSON list in the model config's ``class_names`` parameter, else ``fallback``.

    ``config`` is ``get_model_config(..., as_json=True)``: ``{"config": {"parameters": ...}}``.
    """
    cfg = config.get("config", config)
    try:
        raw = cfg["parameters"][CLASS_NAMES_PARAMETER]["string_value"]
        names = json.loads(raw)
    except (KeyError, TypeError, ValueError):
        return tuple(fallback)
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return tuple(fallback)


# --- try-on ------------------------------------------------------------------------

ImageLike = Any  # a PIL.Image.Image or an [H, W, 3] uint8 array


def is_pil(image: object) -> bool:
    return hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray)


def image_array(spec: EnsembleSpec, name: str, image: ImageLike) -> Array:
    """A PIL image or [H, W, 3] uint8 array -> [1, H, W, 3] uint8, checked like the server does."""
    arr = np.asarray(image.convert("RGB")) if is_pil(image) else image
    if not isinstance(arr, np.ndarray):
        raise InvalidInputError(f"{spec.name}: {name} must be a PIL image or a numpy array")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInputError(
            f"{spec.name}: {name} has shape {list(arr.shape)}, expected [height, width, 3]"
        )
    if arr.dtype != np.uint8:
        raise InvalidInputError(f"{spec.name}: {name} has dtype {arr.dtype}, expected uint8")
    h, w = arr.shape[:2]
    if not (spec.min_side <= h <= spec.max_side and spec.min_side <= w <= spec.max_side):
        raise InvalidInputError(
            f"{spec.name}: {name} is {h}x{w} pixels; each side must be in [{spec.min_side}, {spec.max_side}]"
        )
    return arr[None]


def tryon_inputs(spec: EnsembleSpec, person: ImageLike, garment: ImageLike) -> dict[str, Array]:
    return {"person": image_array(spec, "person", person), "garment": image_array(spec, "garment", garment)}


@dataclass(frozen=True)
class TryOnResult:
    """A try-on with its debug outputs: uint8 [H, W, 3] images and the [H, W] composition mask."""

    image: npt.NDArray[np.uint8]
    warped_garment: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.uint8]


TRYON_DEBUG_OUTPUTS = ("image", "warped_garment", "mask")
