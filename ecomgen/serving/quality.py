"""Image-quality numbers shared by the parity gate, the CPU runtime calibration and the benchmarks."""

from __future__ import annotations

import math

import numpy as np

# A runtime or precision serves "the same images" when its uint8 output is at least this
# close to the fp32 reference (the parity gate's threshold; torch2trt uses PSNR the same way).
PARITY_MIN_PSNR_DB = 40.0


def psnr_uint8(ref: np.ndarray, got: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays (inf when identical)."""
    mse = float(np.mean((ref.astype(np.float64) - got.astype(np.float64)) ** 2))
    return math.inf if mse == 0.0 else 10.0 * math.log10(255.0**2 / mse)


def quantise(array: np.ndarray, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Float values in [low, high] -> uint8 levels, the unit clients see (NaN -> 0)."""
    x = np.nan_to_num(array.astype(np.float64), nan=low, posinf=high, neginf=low)
    return np.clip((x - low) * (255.0 / (high - low)) + 0.5, 0, 255).astype(np.uint8)
