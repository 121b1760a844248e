"""Small numpy helpers shared by the serving steps, training and export (one home each)."""

from __future__ import annotations

import numpy as np

from ecomgen.serving.errors import RequestError


def latents_from_seeds(seeds: np.ndarray, dim: int) -> np.ndarray:
    """Map each int64 seed to a standard-normal latent of length ``dim``.

    Philox is counter-based and platform-independent, so a seed gives the same latent on
    every host, batch position and batch size.
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    out = np.empty((seeds.shape[0], dim), dtype=np.float32)
    for i, s in enumerate(seeds.tolist()):
        np.random.Generator(np.random.Philox(s)).standard_normal(dim, dtype=np.float32, out=out[i])
    return out


def one_hot(class_ids: np.ndarray, num_classes: int) -> np.ndarray:
    ids = np.asarray(class_ids).reshape(-1)
    out = np.zeros((ids.shape[0], num_classes), dtype=np.float32)
    out[np.arange(ids.shape[0]), ids] = 1.0
    return out


def to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """Network output in [-1, 1], NCHW float -> NHWC uint8 (NaN maps to 0)."""
    x = np.clip((np.nan_to_num(images, nan=-1.0) + 1.0) * 127.5 + 0.5, 0.0, 255.0).astype(np.uint8)
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def from_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """NHWC (or HWC) uint8 -> NCHW (CHW) float32 in [-1, 1]."""
    x = images.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """N x 1 x H x W in [0, 1] -> N x H x W uint8."""
    return np.clip(np.nan_to_num(mask[:, 0]) * 255.0 + 0.5, 0, 255).astype(np.uint8)


def check_finite(name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise RequestError(f"input '{name}' contains NaN or Inf ({bad} of {array.size} values)")


def check_range(name: str, array: np.ndarray, low: float, high: float) -> None:
    if array.size == 0:
        return
    if array.dtype.kind in "iu":
        # Python ints: numpy would compare int64 extremes through float.
        lo, hi = int(array.min()), int(array.max())
        bad_value = lo if lo < low else hi
        if lo >= low and hi <= high:
            return
        count = int(np.count_nonzero((array < low) | (array > high)))
        raise RequestError(
            f"input '{name}' value {bad_value} out of range [{int(low)}, {int(high)}] "
            f"({count} of {array.size} values)"
        )
    bad = (array < low) | (array > high)
    if bad.any():
        raise RequestError(
            f"input '{name}' value {float(array[bad].reshape(-1)[0]):g} out of range [{low:g}, {high:g}] "
            f"({int(bad.sum())} of {array.size} values)"
        )
