"""Composition: the marketplace white main image and scene images from a cut-out.

Inputs are the shop's photo (uint8 HxWx3 sRGB, 16..4096 px a side) and its matte (uint8 HxW).
The product's box is the bounding box of ``alpha >= ALPHA_THRESHOLD`` (8/255, about 3%): fainter
matte values are dropped as noise, so a stray speck cannot change the product's scale.

Resampling: ``cv2.INTER_AREA`` to shrink, ``cv2.INTER_LANCZOS4`` to enlarge. Foreground colours
are estimated (blur fusion) on the photo, their smooth terms at <= 384 px and the edge band at full
resolution, then resampled with the matte; solid pixels (``alpha == 255``) stay the photo's own.

White main image rule (as implemented and checked by :func:`main_image_fill`): pure RGB 255
background; the product box scaled so that ``max(box_w / W, box_h / H) == 0.85`` (it fills 85% of
the frame along its limiting axis; in a square frame such as 2000x2000 that is exactly "85% of the
frame's longer side") and centred; no text, nothing else drawn. The checker measures the bounding
box of every pixel that is not exactly (255, 255, 255) and accepts 0.82..0.88.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from numpy.typing import NDArray

from . import harmonise as hm
from .foreground import estimate_foreground, shrink
from .placement import Placement, place
from .scenes import Scene, SceneLayout, background, get_scene, scene_layout
from .shadow import ShadowField, flatlay_shadow, standing_shadow

U8 = NDArray[np.uint8]

ALPHA_THRESHOLD = 8
MAIN_FILL = 0.85
MAIN_FILL_TOLERANCE = 0.03
OUTPUT_FORMATS: tuple[tuple[int, int], ...] = (
    (1080, 1080),
    (1080, 1350),
    (1200, 628),
    (1080, 1920),
    (2000, 2000),
    (2048, 2048),
)
REFLECTION_OPACITY = 0.28
REFLECTION_DEPTH = 0.35  # of the product's height


def _check_inputs(product_rgb: U8, alpha: U8) -> None:
    if not isinstance(product_rgb, np.ndarray) or product_rgb.dtype != np.uint8:
        raise ValueError("product_rgb must be a uint8 numpy array")
    if product_rgb.ndim != 3 or product_rgb.shape[2] != 3:
        raise ValueError(f"product_rgb must be HxWx3 RGB, got shape {product_rgb.shape}")
    h, w = product_rgb.shape[:2]
    if not (16 <= h <= 4096 and 16 <= w <= 4096):
        raise ValueError(f"product photo must be 16..4096 px a side, got {w}x{h}")
    if not isinstance(alpha, np.ndarray) or alpha.dtype != np.uint8 or alpha.shape != (h, w):
        raise ValueError(f"alpha must be a uint8 array of shape {(h, w)}")


def _check_frame(width: int, height: int) -> None:
    for n, v in (("width", width), ("height", height)):
        if not isinstance(v, int | np.integer) or isinstance(v, bool) or not 64 <= int(v) <= 4096:
            raise ValueError(f"{n} must be an integer in [64, 4096], got {v!r}")


def matte_box(alpha: U8) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1), exclusive ends, of ``alpha >= ALPHA_THRESHOLD``; ValueError when empty."""
    m = alpha >= ALPHA_THRESHOLD
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        raise ValueError(f"the matte is empty: no alpha >= {ALPHA_THRESHOLD}")
    cols = np.flatnonzero(m.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def _crop(product_rgb: U8, alpha: U8, pad: int = 0) -> tuple[U8, U8, tuple[int, int, int, int]]:
    """The photo and matte inside the box (plus ``pad`` px where the photo has them), faint alpha
    dropped; and the box's place in the returned arrays (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = matte_box(alpha)
    h, w = alpha.shape
    px0, py0, px1, py1 = max(0, x0 - pad), max(0, y0 - pad), min(w, x1 + pad), min(h, y1 + pad)
    a = alpha[py0:py1, px0:px1].copy()
    a[a < ALPHA_THRESHOLD] = 0
    rgb = np.ascontiguousarray(product_rgb[py0:py1, px0:px1])
    return rgb, a, (x0 - px0, y0 - py0, x1 - px0, y1 - py0)


def resample(img: U8, width: int, height: int) -> U8:
    """INTER_AREA to shrink, Lanczos to enlarge (the same choice for photo and matte)."""
    h, w = img.shape[:2]
    if (w, h) == (width, height):
        return img
    interp = cv2.INTER_AREA if width <= w and height <= h else cv2.INTER_LANCZOS4
    return np.asarray(cv2.resize(img, (width, height), interpolation=interp), np.uint8)


def cutout(product_rgb: U8, alpha: U8, width: int, height: int) -> tuple[U8, U8]:
    """The product's foreground colours and matte, cropped to its box and resampled to ``width`` x ``height``.

    Foreground colours are estimated on the photo with a margin around the box (the background
    there is what blur fusion subtracts), then the box is cut out and resampled.
    """
    x0, y0, x1, y1 = matte_box(alpha)
    rgb, a, (bx0, by0, bx1, by1) = _crop(product_rgb, alpha, pad=max(4, round(0.1 * max(x1 - x0, y1 - y0))))
    fg = estimate_foreground(rgb, a)
    fg, a = np.ascontiguousarray(fg[by0:by1, bx0:bx1]), np.ascontiguousarray(a[by0:by1, bx0:bx1])
    return resample(fg, width, height), resample(a, width, height)


def _blend(dst: U8, fg: U8, a: U8) -> None:
    """``dst = fg * a + dst * (1 - a)`` in place, rounded; ``a == 0`` leaves ``dst`` exactly."""
    w1 = a.astype(np.float32) * np.float32(1 / 255)
    w2 = 1.0 - w1
    dst[...] = cv2.blendLinear(fg, dst, w1, w2)


# ---- white main image ---------------------------------------------------------------------


def white_main_image(product_rgb: U8, alpha: U8, width: int = 2000, height: int = 2000) -> U8:
    """The marketplace main image: pure white, the product centred and filling 85% (see module doc)."""
    _check_inputs(product_rgb, alpha)
    _check_frame(width, height)
    x0, y0, x1, y1 = matte_box(alpha)
    cw, ch = x1 - x0, y1 - y0
    s = MAIN_FILL * min(width / cw, height / ch)
    bw, bh = min(width, max(1, round(cw * s))), min(height, max(1, round(ch * s)))
    fg, a = cutout(product_rgb, alpha, bw, bh)
    out = np.full((height, width, 3), 255, np.uint8)
    ox, oy = (width - bw) // 2, (height - bh) // 2
    _blend(out[oy : oy + bh, ox : ox + bw], fg, a)
    return out


def main_image_fill(image: U8) -> float:
    """The white-image checker: ``max(box_w / W, box_h / H)`` of every pixel that is not pure white.

    0.0 for an all-white image. The rule asks for 0.85 +- 0.03.
    """
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError("image must be a uint8 HxWx3 array")
    m = (image != 255).any(axis=2)
    rows = np.flatnonzero(m.any(axis=1))
    if rows.size == 0:
        return 0.0
    cols = np.flatnonzero(m.any(axis=0))
    h, w = m.shape
    return max((cols[-1] + 1 - cols[0]) / w, (rows[-1] + 1 - rows[0]) / h)


def check_main_image(image: U8) -> list[str]:
    """Every way ``image`` breaks the white main-image rule (empty when it follows it)."""
    problems: list[str] = []
    fill = main_image_fill(image)
    if abs(fill - MAIN_FILL) > MAIN_FILL_TOLERANCE:
        problems.append(f"fill {fill:.3f} is not {MAIN_FILL} +- {MAIN_FILL_TOLERANCE}")
    h, w = image.shape[:2]
    m = (image != 255).any(axis=2)
    if m.any():
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        cx, cy = (cols[0] + cols[-1] + 1) / 2, (rows[0] + rows[-1] + 1) / 2
        if abs(cx - w / 2) > 0.01 * w + 1 or abs(cy - h / 2) > 0.01 * h + 1:
            problems.append(f"product centred at ({cx:.0f}, {cy:.0f}), not ({w / 2:.0f}, {h / 2:.0f})")
        border = np.concatenate([m[0], m[-1], m[:, 0], m[:, -1]])
        if border.any():
            problems.append("the product touches the frame's edge")
    if min(h, w) < 1000:
        problems.append(f"{w}x{h} is under 1000 px on a side (too small for zoom)")
    return problems


# ---- scene images -------------------------------------------------------------------------


@dataclass(frozen=True)
class Composite:
    image: U8
    scene: Scene
    layout: SceneLayout
    placement: Placement
    harmonisation: hm.Harmonisation
    foreground: U8  # the harmonised product colours at the placement's size
    alpha: U8  # the matte at the placement's size


def _band_samples(fg: U8, a: U8, bg: U8, pl: Placement) -> tuple[U8, U8, U8]:
    """Product pixels just inside the matte edge, scene pixels just outside it, and all the product's
    pixels (at about 256 px)."""
    height, width = bg.shape[:2]
    f = min(1.0, 256.0 / max(pl.w, pl.h))
    band = max(2.0, 0.06 * max(pl.w, pl.h) * f)  # band width in reduced px
    reach = (band + 1) / f  # in frame px
    rx0, ry0 = max(0, int(pl.x0 - reach)), max(0, int(pl.y0 - reach))
    rx1, ry1 = min(width, int(np.ceil(pl.x0 + pl.w + reach))), min(height, int(np.ceil(pl.y0 + pl.h + reach)))
    rw, rh = max(2, round((rx1 - rx0) * f)), max(2, round((ry1 - ry0) * f))
    region = shrink(np.ascontiguousarray(bg[ry0:ry1, rx0:rx1]), rw, rh)
    sw, sh = max(1, round(pl.w * f)), max(1, round(pl.h * f))
    fa, ffg = shrink(a, sw, sh), shrink(fg, sw, sh)
    ox, oy = round((pl.x0 - rx0) * f), round((pl.y0 - ry0) * f)
    inside = np.zeros((rh, rw), np.uint8)
    ph, pw = min(sh, rh - oy), min(sw, rw - ox)
    inside[oy : oy + ph, ox : ox + pw] = fa[:ph, :pw] >= 128
    solid = inside.astype(bool)
    inner = solid & (cv2.distanceTransform(inside, cv2.DIST_L2, 3) <= band)
    outer = ~solid & (cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3) <= band)
    prod_inner = inner[oy : oy + ph, ox : ox + pw]
    prod, scene = ffg[:ph, :pw][prod_inner], region[outer]
    whole = ffg[fa >= 128]
    # Means and spreads need a few thousand samples, not every pixel.
    return (
        np.ascontiguousarray(prod[:: max(1, len(prod) // 3000)]),
        np.ascontiguousarray(scene[:: max(1, len(scene) // 3000)]),
        np.ascontiguousarray(whole),
    )


def _apply_shadow(out: U8, sf: ShadowField | None) -> None:
    if sf is None:
        return
    h, w = sf.mult.shape
    region = out[sf.y0 : sf.y0 + h, sf.x0 : sf.x0 + w]
    m3 = cv2.merge([sf.mult, sf.mult, sf.mult])
    region[...] = cv2.multiply(region, m3, scale=1 / 255)


def _reflect(out: U8, fg: U8, a: U8, pl: Placement) -> None:
    """A faded, flipped copy of the product below its contact line (glossy floors)."""
    height = out.shape[0]
    depth = min(int(REFLECTION_DEPTH * pl.h), height - pl.bottom, pl.h)
    if depth < 2:
        return
    flip_fg = fg[::-1][:depth]
    flip_a = a[::-1][:depth].astype(np.float32) * np.float32(1 / 255)
    d = np.arange(depth, dtype=np.float32) / depth
    fade = REFLECTION_OPACITY * (1.0 - d) ** 1.6
    w1 = cv2.blur(flip_a * fade[:, None], (3, 3))
    region = out[pl.bottom : pl.bottom + depth, pl.x0 : pl.x0 + pl.w]
    region[...] = cv2.blendLinear(np.ascontiguousarray(flip_fg), region, w1, 1.0 - w1)


def compose_scene(
    product_rgb: U8,
    alpha: U8,
    scene: Scene | str,
    width: int,
    height: int,
    article_type: str = "unknown",
    variant: int = 0,
    *,
    harmonise: bool = True,
    shadows: bool = True,
    reflection: bool | None = None,
) -> Composite:
    """Place the cut-out on the scene's surface, with shadows, bounded harmonisation and reflection.

    ``reflection`` defaults to the scene's ``glossy`` flag. See :func:`scene_image`.
    """
    _check_inputs(product_rgb, alpha)
    _check_frame(width, height)
    sc = get_scene(scene) if isinstance(scene, str) else scene
    lay = scene_layout(sc, width, height, variant)
    bg = background(sc, width, height, variant)
    x0, y0, x1, y1 = matte_box(alpha)
    pl = place(x1 - x0, y1 - y0, sc, lay, article_type, variant)
    fg, a = cutout(product_rgb, alpha, pl.w, pl.h)
    hz = hm.fit(*_band_samples(fg, a, bg, pl)) if harmonise else hm.identity()
    fg = hz.apply(fg)
    out = bg.copy()
    if reflection if reflection is not None else sc.glossy and lay.layout == "standing":
        _reflect(out, fg, a, pl)
    if shadows:
        shadow = standing_shadow if lay.layout == "standing" else flatlay_shadow
        _apply_shadow(out, shadow(a, pl.x0, pl.y0, width, height, lay.light))
    # The box is inside the frame by construction (placement clamps); clip anyway.
    bx0, by0 = max(0, pl.x0), max(0, pl.y0)
    bx1, by1 = min(width, pl.x0 + pl.w), min(height, pl.y0 + pl.h)
    sx, sy = bx0 - pl.x0, by0 - pl.y0
    _blend(
        out[by0:by1, bx0:bx1],
        np.ascontiguousarray(fg[sy : sy + by1 - by0, sx : sx + bx1 - bx0]),
        np.ascontiguousarray(a[sy : sy + by1 - by0, sx : sx + bx1 - bx0]),
    )
    return Composite(out, sc, lay, pl, hz, fg, a)


def scene_image(
    product_rgb: U8,
    alpha: U8,
    scene: Scene | str,
    width: int,
    height: int,
    article_type: str = "unknown",
    variant: int = 0,
) -> U8:
    """The product standing (or lying, in a flat-lay) on ``scene``: uint8 ``height`` x ``width`` x 3.

    Scale by article type (``placement.SCALE_RULE``), position by ``variant`` (deterministic);
    contact and cast shadows multiply the scene; colours move toward the scene only within
    ``harmonise.MAX_DL`` (lightness) and ``MAX_DE_COLOUR`` (hue, chroma); a reflection on glossy scenes.
    """
    return compose_scene(product_rgb, alpha, scene, width, height, article_type, variant).image


def product_pixels_kept(
    comp: Composite, product_rgb: U8, alpha: U8, erode_px: int | None = None
) -> tuple[float, float, int]:
    """Max |dL*| and dE00 (hue, chroma) between the composite and the resampled photo on the solid core.

    The core is ``alpha == 255`` at the output size, eroded by ``erode_px`` (default: 3 px plus the
    resampling kernel's reach, 2 px per unit of enlargement). Returns the shifts and the core's size.
    """
    pl = comp.placement
    rgb, _, _ = _crop(product_rgb, alpha)
    ref = resample(rgb, pl.w, pl.h)
    if erode_px is None:
        erode_px = 3 + int(np.ceil(2.0 * max(1.0, pl.scale)))
    core = (comp.alpha == 255).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_RECT, (2 * erode_px + 1, 2 * erode_px + 1))
    core = cv2.erode(core, k).astype(bool)
    got = comp.image[pl.y0 : pl.y0 + pl.h, pl.x0 : pl.x0 + pl.w][core]
    dl, dc = hm.lab_shift(ref[core], got)
    return dl, dc, int(core.sum())
