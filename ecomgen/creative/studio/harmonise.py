"""Bounded light and colour harmonisation of a cut-out toward its scene.

Statistics are matched in CIE Lab on the boundary band: the product's pixels just inside its matte
edge against the scene's pixels just outside it. The product moves only part of the way toward the
scene (``STRENGTH_*``), as it would under the scene's light, never to the scene's colour.

The change is realised as one tone curve per RGB channel (applied with ``cv2.LUT``, so it costs
about a millisecond at 2048 px): exposure and white-balance gains in linear light, and a mild
contrast around the band's mean luminance. Curves are fitted (Gauss-Newton on the band's Lab means,
asking for at most ``MAX_DL`` in L and ``MAX_DAB`` in a and b), then shrunk toward the identity
until the worst case over the product's own colours (their neighbours 6 levels away, for the
texture that only full resolution shows, and the grey axis) is within the bound less a
0.3 margin, and verified on every colour of the product at the statistics' resolution (the tests
check every pixel of the output). Without the product's colours, a lattice of the whole RGB cube is
used instead, which holds for any colour but leaves little room to move:

    lightness  |dL*| <= MAX_DL = 6.0               (CIE L*, 0..100: the scene's light may brighten
                                                    or darken the product a little)
    colour     dE00(hue, chroma) <= MAX_DE_COLOUR = 2.0   (CIEDE2000 without its lightness term:
                                                    about one just-noticeable difference)

The colour bound is perceptual rather than |da|, |db| because Lab a and b scale with lightness: any
exposure change moves a saturated blue's b by several units while its hue and saturation, the
item's colour, stay the same. Exposure gains in linear light keep chromaticity exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

MAX_DL = 6.0
MAX_DE_COLOUR = 2.0
MAX_DAB = 2.0  # the largest mean a, b shift the fit asks for (the per-pixel bound is MAX_DE_COLOUR)
STRENGTH_L = 0.3  # fraction of the band's mean L difference to move
STRENGTH_AB = 0.25  # fraction of its mean a, b difference
CONTRAST_STRENGTH = 0.15
MAX_LOG_EXPOSURE = 0.35
MAX_LOG_GAIN = 0.12
CONTRAST_RANGE = (0.97, 1.03)

_F64 = NDArray[np.float64]
_MARGIN = 0.3  # checked on samples: keep a little room for colours between them


def _grid(values: NDArray[np.float64]) -> NDArray[np.uint8]:
    return np.stack(np.meshgrid(values, values, values, indexing="ij"), -1).reshape(-1, 3).astype(np.uint8)


def _near_grey() -> NDArray[np.uint8]:
    """Colours within 16 levels of the grey axis, every 4 levels: a white balance shows most there."""
    v = np.arange(0, 256, 4.0)[:, None, None]
    d = np.array(np.meshgrid([-16, 0, 16], [-16, 0, 16], [-16, 0, 16], indexing="ij")).reshape(3, -1).T
    return np.clip(v + d[None, :, :], 0, 255).reshape(-1, 3).astype(np.uint8)


# Without the product's colours: the whole cube every 32 levels, the dark corner (where one level
# moves a and b most) every 8 and the neighbourhood of the grey axis every 4.
_LATTICE = np.unique(
    np.concatenate([_grid(np.linspace(0, 255, 9).round()), _grid(np.arange(0, 33, 8.0)), _near_grey()]),
    axis=0,
)
_GREY = np.repeat(np.arange(0, 256, 4, dtype=np.uint8)[:, None], 3, axis=1)
# The product's colours are sampled at reduced resolution; its texture at full resolution reaches
# colours a few levels away, so those neighbours are checked too.
_JITTER = np.array(
    [[6, 0, 0], [-6, 0, 0], [0, 6, 0], [0, -6, 0], [0, 0, 6], [0, 0, -6], [6, 6, 6], [-6, -6, -6]]
)
_SEARCH_COLOURS = 4000  # colours checked during the search; all of them are checked at the end


@dataclass(frozen=True)
class Harmonisation:
    """A fitted per-channel curve set and what it does."""

    lut: NDArray[np.uint8]  # (1, 256, 3) for cv2.LUT
    strength: float  # min of the exposure and white-balance strengths: 1.0 = as fitted, < 1 = shrunk
    target: tuple[float, float, float]  # the band mean shift asked for (dL, da, db)
    achieved: tuple[float, float, float]  # the band mean shift obtained
    worst: tuple[float, float]  # max |dL| and max dE00 (hue, chroma) over the lattice and the product

    def apply(self, rgb: NDArray[np.uint8]) -> NDArray[np.uint8]:
        return np.asarray(cv2.LUT(rgb, self.lut), np.uint8)


def identity() -> Harmonisation:
    lut = np.repeat(np.arange(256, dtype=np.uint8)[None, :, None], 3, axis=2)
    return Harmonisation(lut, 0.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), (0.0, 0.0))


def _decode(v: _F64) -> _F64:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


def _encode(v: _F64) -> _F64:
    v = np.clip(v, 0.0, 1.0)
    return np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1 / 2.4) - 0.055)


def lab(rgb: NDArray[np.uint8] | NDArray[np.float64]) -> NDArray[np.float32]:
    """(N, 3) sRGB (uint8, or float in 0..255) -> (N, 3) float32 CIE Lab (D65, L in 0..100)."""
    x = np.asarray(rgb, np.float32).reshape(-1, 1, 3) * np.float32(1 / 255)
    return np.asarray(cv2.cvtColor(x, cv2.COLOR_RGB2Lab), np.float32).reshape(-1, 3)


def delta_e00(
    lab1: NDArray[np.float32], lab2: NDArray[np.float32], lightness: bool = True
) -> NDArray[np.float64]:
    """CIEDE2000 colour difference of (N, 3) Lab arrays; ``lightness=False`` leaves out the L term."""
    l1, a1, b1 = (lab1[:, i].astype(np.float64) for i in range(3))
    l2, a2, b2 = (lab2[:, i].astype(np.float64) for i in range(3))
    c_bar = 0.5 * (np.hypot(a1, b1) + np.hypot(a2, b2))
    g = 0.5 * (1 - np.sqrt(c_bar**7 / (c_bar**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    zero = (c1p * c2p) == 0
    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(zero, 0.0, dh)
    d_l = l2 - l1
    d_c = c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))
    l_bar = 0.5 * (l1 + l2)
    cp_bar = 0.5 * (c1p + c2p)
    hsum = h1p + h2p
    h_bar = np.where(
        zero,
        hsum,
        np.where(
            np.abs(h1p - h2p) <= 180, hsum / 2, np.where(hsum < 360, (hsum + 360) / 2, (hsum - 360) / 2)
        ),
    )
    t = (
        1
        - 0.17 * np.cos(np.radians(h_bar - 30))
        + 0.24 * np.cos(np.radians(2 * h_bar))
        + 0.32 * np.cos(np.radians(3 * h_bar + 6))
        - 0.20 * np.cos(np.radians(4 * h_bar - 63))
    )
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    r_c = 2 * np.sqrt(cp_bar**7 / (cp_bar**7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * cp_bar
    s_h = 1 + 0.015 * cp_bar * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    tc, th = d_c / s_c, d_h / s_h
    tl = d_l / s_l if lightness else 0.0
    return np.asarray(np.sqrt(np.maximum(tl**2 + tc**2 + th**2 + r_t * tc * th, 0.0)))


def _curves(theta: _F64, gamma: float, pivot: float, t_e: float = 1.0, t_c: float = 1.0) -> _F64:
    """(256, 3) output values in 0..255.

    ``theta`` = (log exposure, log gain R, log gain B), all in linear light; ``t_e`` scales the
    exposure and contrast, ``t_c`` the white balance. Brightening rolls highlights off (``x e /
    (1 + (e - 1) x)`` keeps 1 at 1) so that white stays white instead of clipping.
    """
    x = _decode(np.arange(256, dtype=np.float64) / 255.0)
    expo = 1.0 + t_e * (gamma - 1.0)
    x = pivot * np.power(x / pivot, expo)
    e = float(np.exp(theta[0] * t_e))
    x = x * e if e <= 1.0 else x * e / (1.0 + (e - 1.0) * np.clip(x, 0.0, 1.0))
    wb = np.exp(np.array([theta[1], 0.0, theta[2]]) * t_c)
    return np.asarray(_encode(x[:, None] * wb[None, :]) * 255.0)


def _apply_float(curves: _F64, rgb: NDArray[np.uint8]) -> _F64:
    return np.stack([curves[rgb[:, c], c] for c in range(3)], -1)


def _to_lut(curves: _F64) -> NDArray[np.uint8]:
    return np.clip(np.round(curves), 0, 255).astype(np.uint8)[None, :, :]


def _worst(
    lut: NDArray[np.uint8], colours: NDArray[np.uint8], lab0: NDArray[np.float32]
) -> tuple[float, float]:
    out = np.stack([lut[0, colours[:, c], c] for c in range(3)], -1)
    lab1 = lab(out)
    return float(np.abs(lab1[:, 0] - lab0[:, 0]).max()), float(delta_e00(lab0, lab1, lightness=False).max())


def _unique(colours: NDArray[np.uint8]) -> NDArray[np.uint8]:
    packed = np.unique(colours.astype(np.uint32) @ np.array([65536, 256, 1], np.uint32))
    return np.stack([packed >> 16, (packed >> 8) & 255, packed & 255], -1).astype(np.uint8)


def _within(worst: tuple[float, float]) -> bool:
    return worst[0] <= MAX_DL - _MARGIN and worst[1] <= MAX_DE_COLOUR - _MARGIN


def fit(
    product: NDArray[np.uint8], scene: NDArray[np.uint8], colours: NDArray[np.uint8] | None = None
) -> Harmonisation:
    """Fit curves moving ``product`` band colours toward ``scene`` band colours ((N, 3) uint8 each).

    ``colours``: every colour the curves will be applied to (the whole product); the bound is
    enforced on them and the grey axis. ``None``: on a lattice of the whole RGB cube.
    """
    for name, arr in (("product", product), ("scene", scene), ("colours", colours)):
        if arr is not None and (arr.ndim != 2 or arr.shape[1] != 3 or arr.dtype != np.uint8):
            raise ValueError(f"{name} samples must be (N, 3) uint8 arrays")
    if len(product) < 8 or len(scene) < 8:
        return identity()
    mp, target, gamma, pivot = _goal(product, scene)
    theta = _solve(product, mp + target, gamma, pivot)
    lut, t, worst = _bounded(theta, gamma, pivot, _colours_to_check(colours))
    achieved = lab(np.stack([lut[0, product[:, c], c] for c in range(3)], -1)).mean(0) - mp
    return Harmonisation(
        lut=lut,
        strength=float(t),
        target=(float(target[0]), float(target[1]), float(target[2])),
        achieved=(float(achieved[0]), float(achieved[1]), float(achieved[2])),
        worst=worst,
    )


def _goal(product: NDArray[np.uint8], scene: NDArray[np.uint8]) -> tuple[_F64, _F64, float, float]:
    """The product band's mean Lab, the clipped shift toward the scene's, the contrast and pivot."""
    lp, ls = lab(product), lab(scene)
    mp, ms = lp.mean(0).astype(np.float64), ls.mean(0).astype(np.float64)
    target = np.array(
        [
            np.clip(STRENGTH_L * (ms[0] - mp[0]), -MAX_DL, MAX_DL),
            np.clip(STRENGTH_AB * (ms[1] - mp[1]), -MAX_DAB, MAX_DAB),
            np.clip(STRENGTH_AB * (ms[2] - mp[2]), -MAX_DAB, MAX_DAB),
        ]
    )
    sp, ss = float(lp[:, 0].std()), float(ls[:, 0].std())
    gamma = float(np.clip(1.0 + CONTRAST_STRENGTH * (ss / max(sp, 1e-3) - 1.0), *CONTRAST_RANGE))
    lum = 0.2126 * product[:, 0] + 0.7152 * product[:, 1] + 0.0722 * product[:, 2]
    pivot = float(np.clip(_decode(np.array([lum.mean() / 255.0]))[0], 0.02, 0.9))
    return mp, target, gamma, pivot


def _solve(product: NDArray[np.uint8], goal: _F64, gamma: float, pivot: float) -> _F64:
    """Curve parameters (log exposure, log gains a, b) that bring the band's mean Lab to ``goal``."""

    def mean_lab(theta: _F64) -> _F64:
        return lab(_apply_float(_curves(theta, gamma, pivot), product)).mean(0).astype(np.float64)

    # Exposure: a 1-D bisection on the band's mean L (brightening is monotone with the roll-off).
    lo_e, hi_e = -MAX_LOG_EXPOSURE, MAX_LOG_EXPOSURE
    for _ in range(14):
        mid = 0.5 * (lo_e + hi_e)
        lo_e, hi_e = (mid, hi_e) if mean_lab(np.array([mid, 0.0, 0.0]))[0] < goal[0] else (lo_e, mid)
    theta = np.array([0.5 * (lo_e + hi_e), 0.0, 0.0])
    # White balance: Gauss-Newton on the band's mean a, b with the exposure fixed.
    for _ in range(3):
        m0 = mean_lab(theta)
        r = (m0 - goal)[1:]
        if np.abs(r).max() < 0.05:
            break
        jac = np.stack([(mean_lab(theta + 0.02 * np.eye(3)[i])[1:] - m0[1:]) / 0.02 for i in (1, 2)], -1)
        step = np.linalg.lstsq(jac, -r, rcond=None)[0]
        theta[1:] = np.clip(theta[1:] + step, -MAX_LOG_GAIN, MAX_LOG_GAIN)
    return theta


def _colours_to_check(colours: NDArray[np.uint8] | None) -> NDArray[np.uint8]:
    """The colours the bound is enforced on: the product's, their neighbours and the grey axis."""
    if colours is None:
        return _LATTICE
    base = _unique(colours)
    sub = base[:: max(1, len(base) // _SEARCH_COLOURS)].astype(np.int16)
    near = np.clip(sub[None, :, :] + _JITTER[:, None, :], 0, 255).reshape(-1, 3).astype(np.uint8)
    return _unique(np.concatenate([base, near, _GREY]))


def _largest(ok: Callable[[float], bool]) -> float:
    """The largest t in [0, 1] with ok(t), by bisection (1.0 when it already holds)."""
    if ok(1.0):
        return 1.0
    lo, hi = 0.0, 1.0
    for _ in range(6):  # to 1/64 of the fitted strength
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return lo


def _bounded(
    theta: _F64, gamma: float, pivot: float, check: NDArray[np.uint8]
) -> tuple[NDArray[np.uint8], float, tuple[float, float]]:
    """The curves shrunk until the bound holds on every colour of ``check``: (LUT, strength, worst)."""
    search = check[:: max(1, len(check) // _SEARCH_COLOURS)]
    lab_search, lab_check = lab(search), lab(check)

    def lut_at(t_e: float, t_c: float) -> NDArray[np.uint8]:
        return _to_lut(_curves(theta, gamma, pivot, t_e, t_c))

    # Shrink the exposure first (no white balance), then the white balance on top of it.
    t_e = _largest(lambda t: _within(_worst(lut_at(t, 0.0), search, lab_search)))
    t_c = _largest(lambda t: _within(_worst(lut_at(t_e, t), search, lab_search)))
    lut = lut_at(t_e, t_c)
    worst = _worst(lut, check, lab_check)
    for _ in range(12):  # the search saw a sample: verify every colour, shrink further if needed
        if worst[0] <= MAX_DL - 0.1 and worst[1] <= MAX_DE_COLOUR - 0.1:  # headroom for full-res colours
            break
        t_e, t_c = 0.8 * t_e, 0.8 * t_c
        lut = lut_at(t_e, t_c)
        worst = _worst(lut, check, lab_check)
    else:
        return identity().lut, 0.0, (0.0, 0.0)
    return lut, min(t_e, t_c), worst


def lab_shift(before: NDArray[np.uint8], after: NDArray[np.uint8]) -> tuple[float, float]:
    """Max |dL*| and max dE00 (hue, chroma) between two equally shaped uint8 RGB arrays."""
    if before.shape != after.shape:
        raise ValueError("arrays differ in shape")
    if before.size == 0:
        return 0.0, 0.0
    l0, l1 = lab(before.reshape(-1, 3)), lab(after.reshape(-1, 3))
    return float(np.abs(l1[:, 0] - l0[:, 0]).max()), float(delta_e00(l0, l1, lightness=False).max())
