"""Where the product goes in a scene, and how large it is.

Scale rule: the product's bounding box (matte above ``ALPHA_THRESHOLD``) gets a longer side of

    SCALE_RULE[article_type] x sqrt(width x height) x scene.scale x depth

where ``depth = (contact_y - horizon_y) / (preferred_y - horizon_y)`` (clipped to 0.75..1.25)
shrinks a product placed further back on a receding surface. It is then shrunk, never grown, to fit:
at most 92% of the frame's width (86% in a flat-lay), its top at least 4% below the frame's top,
and (flat-lay) at most 86% of the frame's height.

=============  =====  ===========================================
article type   rule   why
=============  =====  ===========================================
Dresses        0.80   a full-length garment, the frame's subject
Jeans          0.74
Shirts         0.64
Tshirts        0.62
Tops           0.60
unknown        0.52   an uploaded photo without a class: mid-size
Handbags       0.48   an object on a table, with room around it
Casual Shoes   0.40
Heels          0.38
Sunglasses     0.34
Watches        0.26   small on a table
=============  =====  ===========================================

Position: the contact point (bottom centre when standing, centre in a flat-lay) starts at the
scene's preferred point, moved by a per-``variant`` offset, then snapped to the nearest point on
the scene's surface polygon inside a safe area of the frame. Everything is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .scenes import ARTICLE_TYPES, Scene, SceneLayout

SCALE_RULE: dict[str, float] = {
    "Dresses": 0.80,
    "Jeans": 0.74,
    "Shirts": 0.64,
    "Tshirts": 0.62,
    "Tops": 0.60,
    "unknown": 0.52,
    "Handbags": 0.48,
    "Casual Shoes": 0.40,
    "Heels": 0.38,
    "Sunglasses": 0.34,
    "Watches": 0.26,
}
assert set(SCALE_RULE) == set(ARTICLE_TYPES)

MAX_WIDTH = 0.92
TOP_MARGIN = 0.04
FLATLAY_MAX = 0.86
DEPTH_RANGE = (0.75, 1.25)

# Per-variant offsets of the contact point, in fractions of the frame.
_OFFSETS: tuple[tuple[float, float], ...] = (
    (0.0, 0.0),
    (-0.13, 0.015),
    (0.13, 0.03),
    (-0.07, -0.02),
    (0.07, 0.01),
    (0.0, 0.035),
)


@dataclass(frozen=True)
class Placement:
    """The product's box in the frame: columns x0..x0+w, rows y0..y0+h (its bottom edge at y0+h)."""

    x0: int
    y0: int
    w: int
    h: int
    contact: tuple[float, float]
    scale: float  # output px per cropped-product px
    depth: float

    @property
    def bottom(self) -> int:
        return self.y0 + self.h


def inside_polygon(poly: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Vectorised even-odd point-in-polygon test for points (x, y) and an (N, 2) polygon."""
    inside = np.zeros(x.shape, bool)
    px, py = poly[:, 0].astype(np.float64), poly[:, 1].astype(np.float64)
    for i in range(len(poly)):
        x1, y1, x2, y2 = px[i - 1], py[i - 1], px[i], py[i]
        crosses = (y1 > y) != (y2 > y)
        xc = x1 + (y - y1) * (x2 - x1) / ((y2 - y1) if y2 != y1 else 1e-12)
        inside ^= crosses & (x < xc)
    return inside


def _candidates(lay: SceneLayout) -> np.ndarray:
    w, h = lay.width, lay.height
    xs = np.linspace(0.08 * w, 0.92 * w, 43)
    if lay.layout == "standing":
        ys = np.linspace(max(lay.floor_y + 0.02 * h, 0.3 * h), 0.965 * h, 40)
    else:
        ys = np.linspace(0.3 * h, 0.7 * h, 21)
    pts = np.stack(np.meshgrid(xs, ys), -1).reshape(-1, 2)
    return np.asarray(pts[inside_polygon(lay.polygon, pts[:, 0], pts[:, 1])], np.float32)


def contact_point(lay: SceneLayout, variant: int) -> tuple[float, float]:
    """The variant's contact point, on the surface and inside the frame's safe area."""
    ox, oy = _OFFSETS[variant % len(_OFFSETS)]
    if lay.mirrored:
        ox = -ox
    tx = lay.contact[0] + ox * lay.width
    ty = lay.contact[1] + oy * lay.height
    cand = _candidates(lay)
    if cand.size == 0:
        return lay.contact
    d = (cand[:, 0] - tx) ** 2 + (2.0 * (cand[:, 1] - ty)) ** 2  # prefer keeping depth
    x, y = cand[int(np.argmin(d))]
    return float(x), float(y)


def place(
    crop_w: int, crop_h: int, scene: Scene, lay: SceneLayout, article_type: str, variant: int
) -> Placement:
    """Size and position a ``crop_w`` x ``crop_h`` cut-out in the scene by the rules above."""
    if article_type not in SCALE_RULE:
        raise ValueError(f"unknown article type {article_type!r}; one of {', '.join(ARTICLE_TYPES)}")
    w, h = lay.width, lay.height
    cx, cy = contact_point(lay, variant)
    depth = 1.0
    if lay.layout == "standing" and lay.horizon_y is not None:
        ref = lay.contact[1] - lay.horizon_y
        if ref > 1e-3:
            depth = float(np.clip((cy - lay.horizon_y) / ref, *DEPTH_RANGE))
    longer = SCALE_RULE[article_type] * np.sqrt(w * h) * scene.scale * depth
    s = longer / max(crop_w, crop_h)
    if lay.layout == "standing":
        s = min(s, MAX_WIDTH * w / crop_w, (cy - TOP_MARGIN * h) / crop_h)
    else:
        s = min(s, FLATLAY_MAX * w / crop_w, FLATLAY_MAX * h / crop_h)
    bw, bh = max(1, round(crop_w * s)), max(1, round(crop_h * s))
    margin = round(0.02 * min(w, h))
    x0 = int(np.clip(round(cx - bw / 2), margin, max(margin, w - bw - margin)))
    if lay.layout == "standing":
        y0 = round(cy) - bh
    else:
        y0 = int(np.clip(round(cy - bh / 2), margin, max(margin, h - bh - margin)))
    return Placement(
        x0=x0,
        y0=int(y0),
        w=bw,
        h=bh,
        contact=(x0 + bw / 2, float(y0 + bh) if lay.layout == "standing" else y0 + bh / 2),
        scale=float(s),
        depth=depth,
    )
