"""Helpers shared by the Triton Python-backend models (numpy only).

This file is copied next to each ``model.py`` in the generated repository, so
it must not import anything from the project. Training and tests import it too,
which keeps the seed -> latent mapping identical everywhere.
"""

from __future__ import annotations

import numpy as np


class RequestError(ValueError):
    """A problem with one request's inputs; reported as INVALID_ARG."""


def latents_from_seeds(seeds: np.ndarray, dim: int) -> np.ndarray:
    """Map each int64 seed to a standard-normal latent of length ``dim``.

    Philox is counter-based and platform-independent, so a seed gives the same
    latent on every host, batch position and batch size.
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    out = np.empty((seeds.shape[0], dim), dtype=np.float32)
    for i, s in enumerate(seeds.tolist()):
        out[i] = np.random.Generator(np.random.Philox(s)).standard_normal(dim, dtype=np.float32)
    return out


def one_hot(class_ids: np.ndarray, num_classes: int) -> np.ndarray:
    ids = np.asarray(class_ids).reshape(-1)
    out = np.zeros((ids.shape[0], num_classes), dtype=np.float32)
    out[np.arange(ids.shape[0]), ids] = 1.0
    return out


def to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """Generator output in [-1, 1], NCHW float -> NHWC uint8."""
    x = np.clip((images + 1.0) * 127.5 + 0.5, 0.0, 255.0).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def check_batched(name: str, array: np.ndarray, dims: tuple[int, ...], dtype: np.dtype) -> None:
    """Validate one request tensor: [batch, *dims] with batch >= 1 and the exact dtype (-1: any size)."""
    # Triton hands a batch-size-0 request to the backend with the batch axis dropped.
    if array.ndim == len(dims) or (array.ndim > 0 and array.shape[0] == 0):
        raise RequestError(f"input '{name}' is an empty batch (batch size 0)")
    if array.dtype != dtype:
        raise RequestError(f"input '{name}' has dtype {array.dtype}, expected {np.dtype(dtype)}")
    if array.ndim != len(dims) + 1 or any(
        d >= 0 and a != d for a, d in zip(array.shape[1:], dims, strict=False)
    ):
        raise RequestError(
            f"input '{name}' has shape {list(array.shape)}, expected [batch, {', '.join(map(str, dims))}]"
        )


def check_range(name: str, array: np.ndarray, low: int, high: int) -> None:
    bad = (array < low) | (array > high)
    if bad.any():
        first = array[bad].reshape(-1)[0]
        raise RequestError(
            f"input '{name}' value {int(first)} out of range [{low}, {high}] "
            f"({int(bad.sum())} of {array.size} values)"
        )
