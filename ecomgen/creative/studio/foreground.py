"""Foreground colour estimation for cut-outs (blur fusion).

Along a soft matte edge a photo pixel is a mix ``I = a F + (1 - a) B`` of the product's colour F
and the old background B. Compositing ``I`` instead of ``F`` over a new scene drags the old
background along as a halo (a white fringe around a product shot on white). Blur fusion
(Forte & Pitié, "Approximate fast foreground colour estimation", ICIP 2021; the two-pass variant of
Germer et al., "Fast multi-level foreground estimation", ICPR 2020, as in pymatting) estimates F
with a few box filters:

    F = blur(a F) / blur(a) + a (I - a blur(F) - (1 - a) blur(B)),   B likewise,

first with a large radius from F = B = I, then with a small one. Where ``a == 1`` it returns I
exactly, so the product's solid pixels are untouched.
"""

from __future__ import annotations

import cv2
import numpy as np
from numpy.typing import NDArray

F32 = NDArray[np.float32]


def shrink(img: NDArray[np.uint8], width: int, height: int) -> NDArray[np.uint8]:
    """A fast shrink for smooth terms and statistics (pyramid halvings, then linear), not for output."""
    while img.shape[1] >= 2 * width and img.shape[0] >= 2 * height:
        img = np.asarray(cv2.pyrDown(img), np.uint8)
    if (img.shape[1], img.shape[0]) == (width, height):
        return img
    return np.asarray(cv2.resize(img, (width, height), interpolation=cv2.INTER_LINEAR), np.uint8)


def _check(image: NDArray[np.uint8], alpha: NDArray[np.uint8]) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("image must be a uint8 HxWx3 RGB array")
    if not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.shape != image.shape[:2]:
        raise ValueError(f"alpha must be a uint8 HxW array matching the image {image.shape[:2]}")


def _blurs(image: F32, fg: F32, bg: F32, a: F32, radius: int) -> tuple[F32, F32]:
    """One blur-fusion step's smooth terms: the local mean foreground and background colours."""
    k = (radius, radius)
    a3 = a[..., None]
    blur_a = cv2.blur(a, k)[..., None]
    blur_f = cv2.blur(fg * a3, k) / (blur_a + 1e-5)
    blur_b = cv2.blur(bg * (1.0 - a3), k) / ((1.0 - blur_a) + 1e-5)
    return blur_f, blur_b


def _residual(image: F32, a3: F32, blur_f: F32, blur_b: F32) -> F32:
    f = blur_f + a3 * (image - a3 * blur_f - (1.0 - a3) * blur_b)
    return np.clip(f, 0.0, 1.0)


def _sample(img: F32, x: NDArray[np.float64], y: NDArray[np.float64]) -> F32:
    """Bilinear samples of an HxWx3 image at points (x, y); remap wants 2-D maps under 32767 a side."""
    n = x.size
    cols = 1024
    rows = -(-n // cols)
    mx = np.zeros(rows * cols, np.float32)
    my = np.zeros(rows * cols, np.float32)
    mx[:n], my[:n] = x, y
    out = cv2.remap(
        img, mx.reshape(rows, cols), my.reshape(rows, cols), cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    return np.asarray(out.reshape(-1, 3)[:n], np.float32)


def estimate_foreground(
    image: NDArray[np.uint8], alpha: NDArray[np.uint8], radius: int | None = None, work_side: int = 384
) -> NDArray[np.uint8]:
    """The product's own colour under its matte (uint8 HxWx3): blur-fusion foreground estimation.

    ``radius`` is the first pass's box size at the working resolution (default: 1/6 of its longer
    side, 5..121 px); two refining passes follow with a quarter of it and 3 px. The image should
    include some background around the matte: along a tight crop's edge there is none to estimate
    the background colour from. The passes' blurred terms are smooth,
    so they are computed at most ``work_side`` px on the longer side; the last residual step runs at
    full resolution on the edge band only (0 < alpha < 255). Pixels with ``alpha == 255`` are returned
    unchanged, and so are those with ``alpha == 0`` (they do not show).
    """
    _check(image, alpha)
    if work_side < 16:
        raise ValueError(f"work_side must be >= 16, got {work_side!r}")
    h, w = alpha.shape
    k = min(1.0, work_side / max(h, w))
    if k < 1.0:
        size = (max(1, round(w * k)), max(1, round(h * k)))
        img_s, a_s = shrink(image, *size), shrink(alpha, *size)
    else:
        img_s, a_s = image, alpha
    hs, ws = a_s.shape
    r1 = int(radius) if radius is not None else int(np.clip(round(max(hs, ws) / 6), 5, 121))
    if r1 < 1:
        raise ValueError(f"radius must be >= 1, got {radius!r}")
    img = img_s.astype(np.float32) * np.float32(1 / 255)
    a = a_s.astype(np.float32) * np.float32(1 / 255)
    f, b = img, img
    radii = (r1, max(3, r1 // 4), 3)
    for i, r in enumerate(radii):
        bf, bb = _blurs(img, f, b, a, r)
        if i < len(radii) - 1:
            f, b = _residual(img, a[..., None], bf, bb), bb
    out = image.copy()
    ys, xs = np.nonzero((alpha > 0) & (alpha < 255))
    if ys.size == 0:
        return out
    if k < 1.0:  # sample the smooth terms at the band's full-resolution pixel centres (bilinear)
        mx = (xs + 0.5) * (ws / w) - 0.5
        my = (ys + 0.5) * (hs / h) - 0.5
        bf_b, bb_b = _sample(bf, mx, my), _sample(bb, mx, my)
    else:
        bf_b, bb_b = bf[ys, xs], bb[ys, xs]
    i_b = image[ys, xs].astype(np.float32) * np.float32(1 / 255)
    a_b = (alpha[ys, xs].astype(np.float32) * np.float32(1 / 255))[:, None]
    f = _residual(i_b, a_b, bf_b, bb_b)
    out[ys, xs] = np.clip(f * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out
