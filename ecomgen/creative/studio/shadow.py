"""Shadows from the matte: a tight contact shadow, a soft cast shadow, a flat-lay drop shadow.

Shadows are returned as a multiplier (uint8, 255 = untouched) over a region of the frame: they
multiply the scene, never cover it, so its texture shows through and nothing outside the product
can get lighter. They are blurry by nature, so they are computed at about 240 px and upsampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from .foreground import shrink
from .scenes import Light

F32 = NDArray[np.float32]
_WORK = 240.0  # the shadow's working size (px on the product's longer side)
_MAX_DARK = 0.9


@dataclass(frozen=True)
class ShadowField:
    """``scene[y0:y0+h, x0:x0+w] *= mult / 255``."""

    x0: int
    y0: int
    mult: NDArray[np.uint8]


def _region(x0: float, y0: float, x1: float, y1: float, width: int, height: int) -> tuple[int, int, int, int]:
    return (
        max(0, int(np.floor(x0))),
        max(0, int(np.floor(y0))),
        min(width, int(np.ceil(x1))),
        min(height, int(np.ceil(y1))),
    )


def _small_alpha(alpha: NDArray[np.uint8], fx: float, fy: float) -> F32:
    bh, bw = alpha.shape
    size = (max(1, round(bw * fx)), max(1, round(bh * fy)))
    return shrink(alpha, *size).astype(np.float32) * np.float32(1 / 255)


def _finish(dark: F32, rx0: int, ry0: int, rw: int, rh: int) -> ShadowField:
    dark = np.clip(dark, 0.0, _MAX_DARK)
    full = cv2.resize(dark, (rw, rh), interpolation=cv2.INTER_LINEAR)
    mult = np.clip(255.0 * (1.0 - full) + 0.5, 0, 255).astype(np.uint8)
    return ShadowField(rx0, ry0, mult)


def standing_shadow(
    alpha: NDArray[np.uint8], x0: int, y0: int, width: int, height: int, light: Light
) -> ShadowField | None:
    """Shadows of a product standing with its box at (x0, y0) and its bottom edge on the contact line.

    Contact: under each column's lowest matte pixel, darker where that pixel touches the line (the
    heel and toe of a shoe, not its arch), plus a faint ambient-occlusion ellipse. Cast: the matte
    projected onto the ground plane (sheared by ``light.shear``, squashed by ``light.squash``,
    flipped toward the camera when it is negative), blurred and faded with distance from the contact.
    """
    bh, bw = alpha.shape
    yc = y0 + bh
    soft = max(0.2, light.softness)
    squash = light.squash if abs(light.squash) >= 0.03 else (0.03 if light.squash >= 0 else -0.03)
    length = abs(squash) * bh
    sigma_far = 0.06 * bh * soft
    pad = 3.0 * sigma_far + 0.03 * bh
    shear_x = light.shear * bh
    top = yc - length - pad if squash > 0 else yc - 0.12 * bh
    bottom = yc + length + pad if squash < 0 else yc + 0.1 * bh + 3 * 0.012 * bh * soft
    rx0, ry0, rx1, ry1 = _region(
        x0 + min(0.0, shear_x) - pad, top, x0 + bw + max(0.0, shear_x) + pad, bottom, width, height
    )
    rw, rh = rx1 - rx0, ry1 - ry0
    if rw < 2 or rh < 2:
        return None
    f = min(1.0, _WORK / max(bh, bw))
    rw_s, rh_s = max(2, round(rw * f)), max(2, round(rh * f))
    fx, fy = rw_s / rw, rh_s / rh
    a = _small_alpha(alpha, fx, fy)
    px, py = (x0 - rx0) * fx, (y0 - ry0) * fy
    yc_s = (yc - ry0) * fy
    bh_s = bh * fy

    # Cast shadow: (x, y) -> (x + shear * h, yc - squash * h), h = height above the contact line.
    m = np.array(
        [
            [1.0, -light.shear * fx / fy, px + light.shear * (fx / fy) * (yc_s - py)],
            [0.0, squash, yc_s - squash * (yc_s - py)],
        ],
        np.float32,
    )
    cast = np.asarray(
        cv2.warpAffine(a, m, (rw_s, rh_s), flags=cv2.INTER_LINEAR, borderValue=(0.0,)), np.float32
    )
    near = cv2.GaussianBlur(cast, (0, 0), max(0.6, 0.008 * bh_s * soft))
    far = cv2.GaussianBlur(cast, (0, 0), max(1.0, 0.06 * bh_s * soft))
    rows = np.arange(rh_s, dtype=np.float32) + 0.5
    t = np.clip(np.abs(rows - yc_s) / max(abs(squash) * bh_s, 1.0), 0, 1)[:, None]
    cast_dark = (near * (1 - t) + far * t) * light.cast * (1.0 - 0.6 * t)

    # Contact shadow: a Gaussian under each column's lowest matte pixel.
    h_s, w_s = a.shape
    solid = a > 0.4
    has = solid.any(axis=0)
    lowest = h_s - 1 - np.argmax(solid[::-1], axis=0)  # last solid row per column
    by = py + lowest.astype(np.float32) + 1.0
    reach = 0.05 * bh_s + 1.0
    wcol = np.where(has, np.exp(-(((yc_s - by) / reach) ** 2)), 0.0).astype(np.float32)
    sig_c = max(0.7, 0.012 * bh_s * soft)
    contact = np.zeros((rh_s, rw_s), np.float32)
    c0 = round(px)
    cols = np.arange(w_s) + c0
    ok = (cols >= 0) & (cols < rw_s)
    g = np.exp(-(((rows[:, None] - by[None, ok]) / sig_c) ** 2)) * wcol[None, ok]
    contact[:, cols[ok]] = g
    contact = np.asarray(cv2.GaussianBlur(contact, (0, 0), sigmaX=1.5 * sig_c, sigmaY=0.5), np.float32)
    dark = 1.0 - (1.0 - cast_dark) * (1.0 - light.contact * contact)

    foot = np.nonzero(has & (wcol > 0.3))[0]
    if foot.size:  # ambient occlusion: a faint ellipse under the footprint
        cx = px + 0.5 * (foot[0] + foot[-1] + 1)
        half_w = 0.55 * (foot[-1] - foot[0] + 1) + 0.02 * bh_s
        half_h = max(1.0, 0.035 * bh_s * soft)
        xs = np.arange(rw_s, dtype=np.float32) + 0.5
        ao = np.exp(-(((xs[None, :] - cx) / half_w) ** 4) - ((rows[:, None] - yc_s) / half_h) ** 2)
        dark = 1.0 - (1.0 - dark) * (1.0 - 0.3 * light.contact * ao)
    return _finish(dark.astype(np.float32), rx0, ry0, rw, rh)


def flatlay_shadow(
    alpha: NDArray[np.uint8], x0: int, y0: int, width: int, height: int, light: Light
) -> ShadowField | None:
    """A product lying on the surface: a soft offset drop shadow and a tight one hugging the edge."""
    bh, bw = alpha.shape
    size = float(max(bh, bw))
    soft = max(0.2, light.softness)
    d = np.array([light.shear, light.squash], np.float64)
    d = d / (np.linalg.norm(d) + 1e-9)
    off = 0.016 * size * soft * d
    sig = 0.022 * size * soft
    pad = abs(off).max() + 3.0 * sig + 2.0
    rx0, ry0, rx1, ry1 = _region(x0 - pad, y0 - pad, x0 + bw + pad, y0 + bh + pad, width, height)
    rw, rh = rx1 - rx0, ry1 - ry0
    if rw < 2 or rh < 2:
        return None
    f = min(1.0, _WORK / size)
    rw_s, rh_s = max(2, round(rw * f)), max(2, round(rh * f))
    fx, fy = rw_s / rw, rh_s / rh
    a = _small_alpha(alpha, fx, fy)
    px, py = (x0 - rx0) * fx, (y0 - ry0) * fy

    def shifted(k: float) -> F32:
        m = np.array([[1, 0, px + k * off[0] * fx], [0, 1, py + k * off[1] * fy]], np.float32)
        return np.asarray(
            cv2.warpAffine(a, m, (rw_s, rh_s), flags=cv2.INTER_LINEAR, borderValue=(0.0,)), np.float32
        )

    drop = cv2.GaussianBlur(shifted(1.0), (0, 0), max(0.8, sig * fx))
    tight = cv2.GaussianBlur(shifted(0.2), (0, 0), max(0.6, 0.005 * size * fx))
    dark = 1.0 - (1.0 - light.cast * drop) * (1.0 - light.contact * tight)
    return _finish(dark.astype(np.float32), rx0, ry0, rw, rh)
