"""Matte refinement: the cut-out network's low-resolution alpha -> a full-size uint8 matte.

The network sees the photo at a fixed size (``ecomgen.models.cutout.INPUT_HW``, stretched, not
letterboxed), so its matte is soft and too coarse for a 2,000 px photo. :func:`refine_alpha`
upsamples it with the fast guided filter (He & Sun, "Fast Guided Filter", 2015; He, Sun and
Tang, "Guided Image Filtering", TPAMI 2013): the colour guided filter's linear coefficients are
solved on a downscaled copy of the photo (long side at most ``WORK_SIDE``), then bilinearly
upsampled and applied to the full-resolution photo, so the matte's edges follow the photo's own
edges. Near-0 and near-1 values are then snapped (background noise and pin-holes in the product
go away), which keeps a constant matte constant.

numpy and OpenCV (``cv2.boxFilter``) only: this runs in the torch-free serving post step.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Long side of the image the guided-filter coefficients are solved at.
WORK_SIDE = 384
# Window radius in units of one low-resolution matte pixel at the working scale: the window must
# span the blurred band that upsampling the coarse matte leaves around each edge.
RADIUS_IN_MATTE_PIXELS = 2.5
# Regulariser (intensities in [0, 1]): smaller follows weaker photo edges, larger stays smoother.
EPS = 1e-3
# Values below LOW become 0 and above HIGH become 1; the band in between is stretched linearly.
LOW, HIGH = 0.04, 0.96


def _box(x: np.ndarray, r: int) -> np.ndarray:
    return cv2.boxFilter(x, -1, (2 * r + 1, 2 * r + 1), normalize=True, borderType=cv2.BORDER_REFLECT)


def guided_coefficients(
    guide: np.ndarray, p: np.ndarray, r: int, eps: float
) -> tuple[np.ndarray, np.ndarray]:
    """Colour guided filter coefficients, box-averaged: (A H x W x 3, b H x W), float32.

    ``guide`` float32 H x W x 3 in [0, 1], ``p`` float32 H x W. The filter output is ``A . I + b``.
    Three-channel box filters and products keep the number of passes small.
    """
    mean_i = _box(guide, r)
    mean_p = _box(p, r)
    cov_ip = _box(guide * p[..., None], r) - mean_i * mean_p[..., None]
    # The guide's 3x3 covariance in each window: diagonal (rr, gg, bb) and off-diagonal (rg, gb, br).
    diag = _box(guide * guide, r) - mean_i * mean_i + np.float32(eps)
    shifted = mean_i[..., [1, 2, 0]]
    off = _box(guide * guide[..., [1, 2, 0]], r) - mean_i * shifted
    rr, gg, bb = diag[..., 0], diag[..., 1], diag[..., 2]
    rg, gb, br = off[..., 0], off[..., 1], off[..., 2]
    # Its inverse by cofactors (symmetric), vectorised over pixels.
    i_rr = gg * bb - gb * gb
    i_rg = gb * br - rg * bb
    i_rb = rg * gb - gg * br
    i_gg = rr * bb - br * br
    i_gb = br * rg - rr * gb
    i_bb = rr * gg - rg * rg
    inv_det = 1.0 / (rr * i_rr + rg * i_rg + br * i_rb)
    c_r, c_g, c_b = cov_ip[..., 0], cov_ip[..., 1], cov_ip[..., 2]
    a = np.empty_like(guide)
    a[..., 0] = (i_rr * c_r + i_rg * c_g + i_rb * c_b) * inv_det
    a[..., 1] = (i_rg * c_r + i_gg * c_g + i_gb * c_b) * inv_det
    a[..., 2] = (i_rb * c_r + i_gb * c_g + i_bb * c_b) * inv_det
    b = mean_p - (a * mean_i).sum(axis=-1)
    return _box(a, r), _box(b, r)


def refine_alpha(
    image: np.ndarray,
    lowres_alpha: np.ndarray,
    eps: float = EPS,
    work_side: int = WORK_SIDE,
    snap: tuple[float, float] = (LOW, HIGH),
) -> np.ndarray:
    """uint8 H x W matte at ``image``'s size from the network's low-resolution matte.

    ``image``: uint8 H x W x 3 (RGB or BGR: the filter does not care), the full-size photo.
    ``lowres_alpha``: float h x w in [0, 1], any size (the network's fixed size; it may have a
    different aspect ratio from the photo, since the photo was stretched to that size).
    """
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 H x W x 3, got {image.dtype} {image.shape}")
    if lowres_alpha.ndim != 2 or min(lowres_alpha.shape) < 1:
        raise ValueError(f"lowres_alpha must be h x w, got {lowres_alpha.shape}")
    h, w = image.shape[:2]
    low, high = snap
    p_low = np.clip(lowres_alpha.astype(np.float32), 0.0, 1.0)
    if float(p_low.max() - p_low.min()) < 1e-6:  # constant: nothing to refine (the filter keeps it anyway)
        value = float(np.clip((p_low.flat[0] - low) / (high - low), 0.0, 1.0))
        return np.full((h, w), round(value * 255), np.uint8)
    # An integer downscale factor: OpenCV's INTER_AREA has a fast path for it.
    factor = max(1, math.ceil(max(h, w) / work_side))
    if factor == 1:
        small = image
    else:
        small = cv2.resize(image, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
    wh, ww = small.shape[:2]
    guide = small.astype(np.float32) * np.float32(1 / 255)
    p = cv2.resize(p_low, (ww, wh), interpolation=cv2.INTER_LINEAR)
    matte_px = max(wh / p_low.shape[0], ww / p_low.shape[1])
    r = max(2, round(RADIUS_IN_MATTE_PIXELS * matte_px))
    a, b = guided_coefficients(guide, p, r, eps)
    # Fold the snapping (q - low) / (high - low) into the coefficients, and the photo's 1/255 into A.
    k = np.float32(1.0 / (high - low))
    a *= k / np.float32(255)
    b = (b - np.float32(low)) * k
    if factor > 1:
        # Fast guided filter: the smooth coefficients are upsampled, the photo's edges are full-size.
        a = cv2.resize(a, (w, h), interpolation=cv2.INTER_LINEAR)
        b = cv2.resize(b, (w, h), interpolation=cv2.INTER_LINEAR)
    q = cv2.transform(cv2.multiply(image, a, dtype=cv2.CV_32F), np.ones((1, 3), np.float32))
    _, q = cv2.threshold(cv2.add(q, b), 0.0, 0.0, cv2.THRESH_TOZERO)  # negatives to 0
    return cv2.convertScaleAbs(q, alpha=255.0)  # rounds, and saturates above 1


def upsample_bilinear(lowres_alpha: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """The plain alternative (no guide, no snapping): bilinear resize to ``hw``, uint8."""
    q = cv2.resize(
        np.clip(lowres_alpha.astype(np.float32), 0, 1), (hw[1], hw[0]), interpolation=cv2.INTER_LINEAR
    )
    return cv2.convertScaleAbs(q, alpha=255.0)
