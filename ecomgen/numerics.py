"""Numbers shared by serving, models, training, export and benchmarks (one home each): the seed ->
latent mapping, one-hot, the uint8 quantiser clients see, PSNR, and the request value checks."""

from __future__ import annotations

from typing import Any

import numpy as np

from ecomgen.errors import RequestError

# numpy's SeedSequence constants (numpy/random/bit_generator.pyx): Philox(seed) keys itself with
# SeedSequence(seed).generate_state(2, uint64), which costs ~45 us a seed in Python; the same
# hash over a whole batch in numpy costs about 1 us a seed.
_INIT_A, _MULT_A, _INIT_B, _MULT_B = 0x43B0D7E5, 0x931E8875, 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R, _POOL = 0xCA01F9DD, 0x4973F715, 4


def philox_keys(seeds: np.ndarray) -> np.ndarray:
    """``SeedSequence(s).generate_state(2, np.uint64)`` for every non-negative int64 seed, vectorised."""
    s = np.asarray(seeds, dtype=np.uint64).reshape(-1)
    words = [(s & 0xFFFFFFFF).astype(np.uint32), (s >> np.uint64(32)).astype(np.uint32)]
    words += [np.zeros_like(words[0])] * (_POOL - 2)  # seeds are at most 2 words; the pool pads with 0
    hash_const = [np.uint32(_INIT_A)]

    def hashmix(value: np.ndarray) -> np.ndarray:
        value = value ^ hash_const[0]
        hash_const[0] = np.uint32((int(hash_const[0]) * _MULT_A) & 0xFFFFFFFF)
        value = value * hash_const[0]
        return value ^ (value >> np.uint32(16))

    def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        r = np.uint32(_MIX_L) * x - np.uint32(_MIX_R) * y
        return r ^ (r >> np.uint32(16))

    with np.errstate(over="ignore"):
        pool = [hashmix(w) for w in words]
        for src in range(_POOL):
            for dst in range(_POOL):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        out = np.empty((s.shape[0], 4), dtype=np.uint32)
        h = _INIT_B
        for i in range(4):
            v = pool[i % _POOL] ^ np.uint32(h)
            h = (h * _MULT_B) & 0xFFFFFFFF
            v = v * np.uint32(h)
            out[:, i] = v ^ (v >> np.uint32(16))
    return out.view("<u8").reshape(-1, 2).astype(np.uint64)


def latents_from_seeds(seeds: np.ndarray, dim: int) -> np.ndarray:
    """Map each int64 seed to a standard-normal latent of length ``dim``.

    The latent is ``Generator(Philox(seed)).standard_normal(dim)``: Philox is counter-based and
    platform-independent, so a seed gives the same latent on every host, batch position and
    batch size. The Philox keys are derived for the whole batch at once (``philox_keys``).
    """
    seeds = np.asarray(seeds, dtype=np.int64).reshape(-1)
    out = np.empty((seeds.shape[0], dim), dtype=np.float32)
    bitgen = np.random.Philox(key=np.zeros(2, np.uint64))
    gen = np.random.Generator(bitgen)
    state = bitgen.state
    for i, key in enumerate(philox_keys(seeds)):
        state["state"]["counter"] = np.zeros(4, np.uint64)
        state["state"]["key"] = key
        state["buffer_pos"], state["has_uint32"], state["uinteger"] = 4, 0, 0
        bitgen.state = state
        gen.standard_normal(dim, dtype=np.float32, out=out[i])
    return out


def one_hot(class_ids: np.ndarray, num_classes: int) -> np.ndarray:
    ids = np.asarray(class_ids).reshape(-1)
    out = np.zeros((ids.shape[0], num_classes), dtype=np.float32)
    out[np.arange(ids.shape[0]), ids] = 1.0
    return out


def quantise(array: np.ndarray, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Float values in [low, high] -> uint8 levels: the one quantiser, exactly what clients see.

    Images are [-1, 1] (the default), masks [0, 1]. NaN maps to 0, +-Inf to the nearest end.
    float32 arithmetic: this runs on every served image.
    """
    scale = np.float32(255.0 / (high - low))
    # One temporary, updated in place; fmax/fmin return the number where the other is NaN, so NaN
    # ends at 0 and +-Inf at the ends, as nan_to_num would give, at a third of the cost.
    x = np.array(array, dtype=np.float32)  # a copy, also of a 0-d input
    x -= np.float32(low)
    x *= scale
    x += np.float32(0.5)
    np.fmax(x, np.float32(0.0), out=x)
    np.fmin(x, np.float32(255.0), out=x)
    return x.astype(np.uint8)


def to_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """Network images in [-1, 1], NCHW float -> NHWC uint8."""
    return np.ascontiguousarray(quantise(images).transpose(0, 2, 3, 1))


def from_uint8_hwc(images: np.ndarray) -> np.ndarray:
    """NHWC (or HWC) uint8 -> NCHW (CHW) float32 in [-1, 1]."""
    x = images.astype(np.float32) / 127.5 - 1.0
    return np.ascontiguousarray(np.moveaxis(x, -1, -3))


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """N x 1 x H x W masks in [0, 1] -> N x H x W uint8."""
    return quantise(mask[:, 0], 0.0, 1.0)


def check_finite(name: str, array: np.ndarray) -> None:
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise RequestError(f"input '{name}' contains NaN or Inf ({bad} of {array.size} values)")


def check_range(name: str, array: np.ndarray, low: float, high: float) -> None:
    if array.size == 0:
        return
    if array.dtype.kind in "iu":
        # Python ints: numpy would compare int64 extremes with a float bound through float.
        if int(array.min()) >= low and int(array.max()) <= high:
            return
        offending = [v for v in array.reshape(-1).tolist() if v < low or v > high]
        raise RequestError(
            f"input '{name}' value {offending[0]} out of range [{int(low)}, {int(high)}] "
            f"({len(offending)} of {array.size} values)"
        )
    bad = (array < low) | (array > high)
    if bad.any():
        raise RequestError(
            f"input '{name}' value {float(array[bad].reshape(-1)[0]):g} out of range [{low:g}, {high:g}] "
            f"({int(bad.sum())} of {array.size} values)"
        )


# A runtime or precision serves "the same images" when its uint8 output is at least this
# close to the fp32 reference (the parity gate's threshold; torch2trt uses PSNR the same way).
PARITY_MIN_PSNR_DB = 40.0


def psnr(ref: np.ndarray, got: np.ndarray, peak: float = 255.0, axis: tuple[int, ...] | None = None) -> Any:
    """Peak signal-to-noise ratio in dB (inf when identical): the one PSNR.

    ``axis=None`` gives one float over everything; ``axis=(1, 2, 3)`` one value per image of a
    batch (an array). ``peak`` is the largest value: 255 for uint8 levels, 1.0 or 2.0 for floats.
    """
    diff = np.asarray(ref, dtype=np.float64) - np.asarray(got, dtype=np.float64)
    mse = np.mean(diff * diff, axis=axis)
    with np.errstate(divide="ignore"):
        out = 10.0 * np.log10(peak**2 / mse)
    return float(out) if axis is None else out


def psnr_uint8(ref: np.ndarray, got: np.ndarray) -> float:
    """PSNR of two uint8 images as clients see them."""
    return float(psnr(ref, got))


# The value range a client sees for each kind of network output (TensorSpec.kind).
CLIENT_RANGES = {"image": (-1.0, 1.0), "mask": (0.0, 1.0)}


def output_levels(kind: str, ref: np.ndarray, got: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference and candidate output as the uint8 levels a client sees: images [-1, 1], masks
    [0, 1], anything else over the reference's own range."""
    ref, got = np.asarray(ref), np.asarray(got)
    if kind in CLIENT_RANGES:
        low, high = CLIENT_RANGES[kind]
    else:
        low, high = float(np.min(ref)), float(np.max(ref))
        high = high if high > low else low + 1.0
    return quantise(ref, low, high), quantise(got, low, high)


def outputs_match(ref: np.ndarray, got: np.ndarray, kind: str = "image") -> tuple[bool, float]:
    """The output-parity rule (export, the TensorRT gate, calibration, benchmarks): both outputs as
    the levels clients see (``output_levels``) at PSNR >= PARITY_MIN_PSNR_DB. (passes, PSNR dB)."""
    value = psnr_uint8(*output_levels(kind, ref, got))
    return value >= PARITY_MIN_PSNR_DB, value
