"""Try-on metrics shared by the evaluation (test split) and the ablations (train hold-out).

* ``paired_scores``: SSIM in pytorch-ssim's convention (Gaussian 11x11, sigma 1.5, zero
  padding, [0, 1] RGB: CP-VTON / ACGPN / PF-AFN lineage), SSIM in scikit-image's default
  convention (``structural_similarity(a, b, channel_axis=2, data_range=255)``: 7x7 uniform
  window, sample covariance, 3-px border cropped, mean of the RGB channels; reimplemented
  here with scipy so no extra dependency is needed, checked against scikit-image by a unit
  test), and PSNR on uint8.
* ``transfer_check``: does the torso take the new garment's colour?
* ``arm_preservation``: are the person's visible arms and hands still there, where the new
  garment cannot cover them? The exact rule is in its docstring.
* ``paste_baseline``: the garment stretched into the torso box of the true parse.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from scipy.ndimage import binary_erosion, uniform_filter

from ecomgen.numerics import psnr
from ecomgen.serving.handlers.tryon import garment_mask
from training.image_metrics import ssim
from training.viton import ARM_KEYPOINTS, ARMS, UPPER

# arm_preservation's constants (see its docstring).
ARM_ERODE_PX = 2
MIN_KEYPOINT_CONFIDENCE = 0.1
SLEEVE_QUANTILE = 5  # percentile of the wearer's arm-skin positions: where the sleeve ends
SLEEVE_MARGIN = 0.15  # arm segments (shoulder->elbow = 1) past the sleeve end that must stay skin
SKIN_DISTANCE = 40.0  # RGB units


def u8_to_unit(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2).float() / 255.0


def ssim_skimage(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-image SSIM of uint8 NHWC batches, exactly scikit-image's defaults for RGB uint8."""
    win, c1, c2 = 7, (0.01 * 255) ** 2, (0.03 * 255) ** 2
    cov_norm = win * win / (win * win - 1)
    x, y = a.astype(np.float64), b.astype(np.float64)
    size = (1, win, win, 1)  # filter H and W only, per image and channel (reflect, as skimage)
    ux, uy = uniform_filter(x, size), uniform_filter(y, size)
    vx = cov_norm * (uniform_filter(x * x, size) - ux * ux)
    vy = cov_norm * (uniform_filter(y * y, size) - uy * uy)
    vxy = cov_norm * (uniform_filter(x * y, size) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return s[:, pad:-pad, pad:-pad].mean(axis=(1, 2, 3))


def paired_scores(result: np.ndarray, real: np.ndarray) -> dict[str, np.ndarray]:
    """Per-image SSIM (pytorch-ssim and skimage conventions) and PSNR of uint8 NHWC batches."""
    s = ssim(u8_to_unit(result), u8_to_unit(real), data_range=1.0, padding=5).numpy()
    return {"ssim": s, "ssim_skimage": ssim_skimage(result, real), "psnr": psnr(real, result, axis=(1, 2, 3))}


def paste_baseline(person: np.ndarray, cloth: np.ndarray, regions: np.ndarray) -> np.ndarray:
    """Trivial baseline: the garment (its mask's bounding box) stretched into the torso box."""
    out = person.copy()
    for i in range(person.shape[0]):
        ys, xs = np.nonzero(regions[i] == UPPER)
        mask = garment_mask(cloth[i]) > 0.5
        gy, gx = np.nonzero(mask)
        if ys.size == 0 or gy.size == 0:
            continue
        y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
        crop = cloth[i, gy.min() : gy.max() + 1, gx.min() : gx.max() + 1]
        crop_mask = mask[gy.min() : gy.max() + 1, gx.min() : gx.max() + 1]
        size = (int(x1 - x0), int(y1 - y0))
        patch = np.asarray(Image.fromarray(crop).resize(size, Image.Resampling.BILINEAR))
        pmask = np.asarray(Image.fromarray(crop_mask.astype(np.uint8) * 255).resize(size)) > 127
        region = out[i, y0:y1, x0:x1]
        region[pmask] = patch[pmask]
    return out


def region_colour(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Mean RGB over each image's mask (NaN where the mask is empty)."""
    m = masks[..., None].astype(np.float64)
    total = m.sum(axis=(1, 2))
    with np.errstate(invalid="ignore", divide="ignore"):
        return (images * m).sum(axis=(1, 2)) / total


def transfer_check(
    result: np.ndarray, person: np.ndarray, regions: np.ndarray, new_cloth: np.ndarray, old_cloth: np.ndarray
) -> np.ndarray:
    """Per pair: 1 if the result's torso colour is nearer the new garment's than the old one's,
    0 if not, NaN when the two garments' colours are too close to tell (< 40 RGB units)."""
    torso = regions == UPPER
    got = region_colour(result.astype(np.float64), torso)
    new = region_colour(new_cloth.astype(np.float64), np.stack([garment_mask(c) > 0.5 for c in new_cloth]))
    old = region_colour(old_cloth.astype(np.float64), np.stack([garment_mask(c) > 0.5 for c in old_cloth]))
    d_new, d_old = np.linalg.norm(got - new, axis=1), np.linalg.norm(got - old, axis=1)
    decided = np.linalg.norm(new - old, axis=1) >= 40
    return np.where(decided & np.isfinite(d_new) & np.isfinite(d_old), (d_new < d_old).astype(float), np.nan)


# --- arm and hand preservation -----------------------------------------------------------


def arm_position(points: np.ndarray, chain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Position of each (x, y) point along shoulder -> elbow -> wrist, and its distance to it.

    0 at the shoulder, 1 at the elbow, 2 at the wrist; past the wrist (the hand) keeps growing
    in forearm lengths, before the shoulder goes negative (the projection is not clamped at
    the chain's two ends, only between the segments).
    """
    best_t = np.full(len(points), np.nan)
    best_d = np.full(len(points), np.inf)
    for k in range(2):
        a, b = chain[k], chain[k + 1]
        ab = b - a
        length2 = float(ab @ ab)
        if length2 < 1:
            continue
        u = ((points - a) @ ab) / length2
        lo, hi = (-np.inf if k == 0 else 0.0), (np.inf if k == 1 else 1.0)
        u = np.clip(u, lo, hi)
        d = np.linalg.norm(points - (a + u[:, None] * ab), axis=1)
        better = d < best_d
        best_t[better], best_d[better] = k + u[better], d[better]
    return best_t, best_d


def _arm_pixels(regions: np.ndarray, erode: int) -> np.ndarray:
    arms = regions == ARMS
    return binary_erosion(arms, iterations=erode) if erode else arms


def _chains(pose: np.ndarray) -> list[np.ndarray | None]:
    out: list[np.ndarray | None] = []
    for ids in ARM_KEYPOINTS:
        k = pose[list(ids)]
        out.append(k[:, :2].astype(np.float64) if (k[:, 2] > MIN_KEYPOINT_CONFIDENCE).all() else None)
    return out


def _assign(points: np.ndarray, chains: list[np.ndarray | None]) -> tuple[np.ndarray, np.ndarray]:
    """Per point: the arm (0 right, 1 left; -1 none) whose chain is nearest, and t along it."""
    side = np.full(len(points), -1)
    t = np.full(len(points), np.nan)
    dist = np.full(len(points), np.inf)
    for s, chain in enumerate(chains):
        if chain is None:
            continue
        ts, ds = arm_position(points, chain)
        better = ds < dist
        side[better], t[better], dist[better] = s, ts[better], ds[better]
    return side, t


def sleeve_ends(wearer_labels: np.ndarray, wearer_pose: np.ndarray) -> list[float | None]:
    """Where the garment's sleeves end, per arm, as its own wearer shows it: the
    ``SLEEVE_QUANTILE``th percentile of the positions of the wearer's arm-skin pixels on that
    arm; 2.0 (the wrist) where that arm shows no skin; None where the arm's keypoints are
    missing."""
    chains = _chains(wearer_pose)
    ys, xs = np.nonzero(_arm_pixels(wearer_labels, 0))
    side, t = _assign(np.stack([xs, ys], 1).astype(np.float64), chains)
    out: list[float | None] = []
    for s, chain in enumerate(chains):
        ts = t[side == s]
        out.append(None if chain is None else float(np.percentile(ts, SLEEVE_QUANTILE)) if ts.size else 2.0)
    return out


def arm_preservation(
    result: np.ndarray,
    person: np.ndarray,
    labels: np.ndarray,
    pose: np.ndarray,
    sleeves: list[float | None],
) -> tuple[int, int]:
    """(preserved, required) arm and hand pixels of one unpaired result.

    The rule: the person's arm and hand pixels are the arms region of the person's test parse
    (LIP labels 14 and 15, left and right arm, which include the hands, and 3, glove), eroded
    by ``ARM_ERODE_PX`` px. Each is assigned to the nearer arm (OpenPose
    shoulder-elbow-wrist chain with every keypoint's confidence > 0.1; an arm without one is
    left out) and placed along it (``arm_position``: 0 shoulder, 1 elbow, 2 wrist, > 2 hand).
    The new garment covers an arm up to its sleeve end ``s`` (``sleeve_ends``, measured on the
    garment's own wearer in the same split). Pixels at position >= s + ``SLEEVE_MARGIN`` are
    *required*: no sleeve of this garment reaches them. A required pixel is *preserved* if the
    result there is within ``SKIN_DISTANCE`` RGB units (Euclidean, uint8) of the input photo's
    pixel or of the median colour of the person's arm pixels.
    """
    ys, xs = np.nonzero(_arm_pixels(labels, ARM_ERODE_PX))
    if ys.size == 0:
        return 0, 0
    side, t = _assign(np.stack([xs, ys], 1).astype(np.float64), _chains(pose))
    ends = np.array([np.nan if s is None else s for s in sleeves] + [np.nan])
    limit = ends[side]  # side -1 -> NaN
    required = np.isfinite(limit) & (t >= limit + SLEEVE_MARGIN)
    if not required.any():
        return 0, 0
    ys, xs = ys[required], xs[required]
    got = result[ys, xs].astype(np.float64)
    own = person[ys, xs].astype(np.float64)
    skin = np.median(person[labels == ARMS].astype(np.float64), axis=0)
    near = (np.linalg.norm(got - own, axis=1) <= SKIN_DISTANCE) | (
        np.linalg.norm(got - skin, axis=1) <= SKIN_DISTANCE
    )
    return int(near.sum()), int(required.sum())
