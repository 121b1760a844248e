"""Drawing primitives shared by the ad and inventory renderers (numpy + Pillow).

Colour mixing in HLS, anti-aliased rounded masks and shapes, soft shadows, alpha gradients and fills,
text drawn with a WCAG contrast check against the pixels actually behind it (:func:`draw_text`), and
pills (badges, buttons) sized to their text.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ecomgen.creative.text import (
    RGB,
    Box,
    TextLayout,
    adjust_for_contrast,
    contrast_ratio,
    fit_text,
    relative_luminance,
    worst_contrast,
)
from ecomgen.errors import RequestError

MIN_CONTRAST = 4.5  # AA for normal text, applied to all ad text
WHITE: RGB = (255, 255, 255)
INK: RGB = (24, 26, 32)  # near-black for text on light backgrounds

# ---------------------------------------------------------------------------------------------- colour


def hls(rgb: RGB) -> tuple[float, float, float]:
    return colorsys.rgb_to_hls(*(c / 255.0 for c in rgb))


def from_hls(h: float, lightness: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h, min(max(lightness, 0.0), 1.0), min(max(s, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


def text_on(fill: RGB) -> RGB:
    return WHITE if contrast_ratio(fill, WHITE) >= contrast_ratio(fill, INK) else INK


# ---------------------------------------------------------------------------------------------- shapes


def fill_box(canvas: Image.Image, box: Box, colour: RGB) -> None:
    ImageDraw.Draw(canvas).rectangle((box.x0, box.y0, box.x1 - 1, box.y1 - 1), fill=colour)


def rounded_mask(size: tuple[int, int], radius: float) -> Image.Image:
    """An anti-aliased rounded-rectangle mask (Pillow draws it aliased): each corner pixel gets the
    fraction of it inside the arc, approximated by its centre's distance to the arc."""
    w, h = size
    m = np.ones((h, w), np.float32)
    r = max(0.0, min(radius, w / 2, h / 2))
    if r > 0:
        k = int(np.ceil(r))
        yy, xx = np.mgrid[0:k, 0:k].astype(np.float32) + 0.5
        d = np.hypot(xx - r, yy - r)
        a = np.where((xx >= r) | (yy >= r), 1.0, np.clip(r - d + 0.5, 0.0, 1.0)).astype(np.float32)
        for corner, (ys, xs) in {
            "tl": (slice(0, k), slice(0, k)),
            "tr": (slice(0, k), slice(w - k, w)),
            "bl": (slice(h - k, h), slice(0, k)),
            "br": (slice(h - k, h), slice(w - k, w)),
        }.items():
            c = a[:, ::-1] if corner[1] == "r" else a
            c = c[::-1, :] if corner[0] == "b" else c
            m[ys, xs] = np.minimum(m[ys, xs], c)
    return Image.fromarray(np.rint(m * 255).astype(np.uint8))


def paste_shape(canvas: Image.Image, box: Box, colour: RGB, radius: float, opacity: float = 1.0) -> None:
    mask = rounded_mask((box.w, box.h), radius)
    if opacity < 1.0:
        mask = mask.point(lambda v: int(v * opacity))
    canvas.paste(Image.new("RGB", (box.w, box.h), colour), (box.x0, box.y0), mask)


def shadow(canvas: Image.Image, box: Box, radius: float, blur: int, offset: int, strength: float) -> None:
    pad = blur * 3
    w, h = box.w + 2 * pad, box.h + 2 * pad
    m = Image.new("L", (w, h), 0)
    m.paste(rounded_mask((box.w, box.h), radius), (pad, pad))
    m = m.filter(ImageFilter.GaussianBlur(blur)).point(lambda v: int(v * strength))
    canvas.paste(Image.new("RGB", (w, h), (0, 0, 0)), (box.x0 - pad, box.y0 - pad + offset), m)


def gradient(canvas: Image.Image, box: Box, colour: RGB, a0: float, a1: float, vertical: bool = True) -> None:
    """Alpha ramp from ``a0`` (top or left) to ``a1`` (bottom or right), eased (smoothstep)."""
    n = box.h if vertical else box.w
    t = np.linspace(0.0, 1.0, n)
    t = t * t * (3 - 2 * t)
    a = a0 + (a1 - a0) * t
    m = np.repeat(a[:, None], box.w, axis=1) if vertical else np.repeat(a[None, :], box.h, axis=0)
    mask = Image.fromarray((np.clip(m, 0, 1) * 255).astype(np.uint8))
    canvas.paste(Image.new("RGB", (box.w, box.h), colour), (box.x0, box.y0), mask)


def fill_alpha(canvas: Image.Image, box: Box, colour: RGB, alpha: float) -> None:
    if box.w > 0 and box.h > 0:
        canvas.paste(
            Image.new("RGB", (box.w, box.h), colour),
            (box.x0, box.y0),
            Image.new("L", (box.w, box.h), round(alpha * 255)),
        )


# --------------------------------------------------------------------------------------- text drawing


@dataclass
class TextPlacement:
    """What was drawn for one text (for tests and debugging)."""

    field: str
    layout: TextLayout
    colour: RGB
    contrast: float  # at the 1st percentile of the pixels behind the glyphs (before drawing them)
    plate: bool  # a plate had to be put behind the text to reach the contrast


def _dilate(m: np.ndarray, r: int) -> np.ndarray:
    """Binary dilation by a (2r+1)-square, separably (numpy only: no SciPy in the serving image)."""
    out = m.copy()
    for axis in (0, 1):
        src = out.copy()
        for k in range(1, r + 1):
            if axis == 0:
                out[k:] |= src[:-k]
                out[:-k] |= src[k:]
            else:
                out[:, k:] |= src[:, :-k]
                out[:, :-k] |= src[:, k:]
    return out


def _behind(canvas: Image.Image, mask: Image.Image, region: Box) -> np.ndarray:
    """Canvas pixels under the glyphs and a 2 px halo (``mask`` covers ``region`` of the canvas)."""
    m = _dilate(np.asarray(mask) > 32, 2)
    return np.asarray(canvas.crop((region.x0, region.y0, region.x1, region.y1)))[m]


def draw_text(
    canvas: Image.Image,
    layout: TextLayout,
    colour: RGB,
    field: str,
    min_ratio: float = MIN_CONTRAST,
    plate_colour: RGB | None = None,
) -> TextPlacement:
    """Draw ``layout`` in ``colour``, adjusted to reach ``min_ratio`` against the pixels behind it; if no
    colour can (a busy photo), put a translucent plate behind the text first."""
    k = layout.ink
    region = Box(
        max(k.x0 - 4, 0), max(k.y0 - 4, 0), min(k.x1 + 4, canvas.width), min(k.y1 + 4, canvas.height)
    )
    mask = layout.draw_mask(canvas.size, region)
    c, ok = adjust_for_contrast(colour, _behind(canvas, mask, region), min_ratio)
    plate = False
    if not ok:
        # A plate a little bigger than the ink, in the colour opposite to the text's.
        pc = plate_colour or (INK if contrast_ratio(c, INK) > contrast_ratio(c, WHITE) else WHITE)
        pad = max(6, round(layout.size * 0.3))
        box = Box(
            max(k.x0 - pad, 0),
            max(k.y0 - pad // 2, 0),
            min(k.x1 + pad, canvas.width),
            min(k.y1 + pad // 2, canvas.height),
        )
        for opacity in (0.6, 0.75, 0.9, 1.0):
            trial = canvas.crop((box.x0, box.y0, box.x1, box.y1))
            paste_shape(trial, Box(0, 0, box.w, box.h), pc, radius=pad, opacity=opacity)
            test = canvas.copy()
            test.paste(trial, (box.x0, box.y0))
            c2, ok2 = adjust_for_contrast(colour, _behind(test, mask, region), min_ratio)
            if ok2 or opacity == 1.0:
                canvas.paste(trial, (box.x0, box.y0))
                c, plate = c2, True
                break
    ratio = worst_contrast(c, _behind(canvas, mask, region))
    canvas.paste(Image.new("RGB", (region.w, region.h), c), (region.x0, region.y0), mask)
    return TextPlacement(field, layout, c, ratio, plate)


def button_colours(fill: RGB) -> tuple[RGB, RGB]:
    """(fill, text): white or ink text, whichever contrasts more; the fill is darkened until it passes."""
    text = WHITE if contrast_ratio(fill, WHITE) >= contrast_ratio(fill, INK) else INK
    f = fill
    for _ in range(40):
        if contrast_ratio(f, text) >= MIN_CONTRAST:
            break
        h, lightness, s = hls(f)
        f = from_hls(h, lightness - 0.02 if text == WHITE else lightness + 0.02, s)
    return f, text


@dataclass(frozen=True)
class PillPlan:
    w: int
    h: int
    size: int  # text size
    lines: int
    radius: float


def pill_plan(text: str, field: str, height: int, max_w: int) -> PillPlan:
    """Size a pill (badge) or button for ``text``: one line at up to 47% of ``height``; a long text
    shrinks to two thirds of that, then wraps to two lines (the pill grows) rather than clip."""
    pad_x = round(height * 0.5)
    size = round(height * 0.47)
    inner_w = max(1, max_w - 2 * pad_x)
    try:
        probe = fit_text(
            text,
            Box(0, 0, inner_w, height),
            max_size=size,
            min_size=max(12, size * 2 // 3),
            max_lines=1,
            field=field,
        )
        h = height
    except RequestError:
        probe = fit_text(
            text,
            Box(0, 0, inner_w, 4 * height),
            max_size=size * 2 // 3,
            min_size=max(12, size // 2),
            max_lines=2,
            field=field,
        )
        h = probe.ink.y1 - min(probe.ink.y0, 0) + round(height * 0.5)
    w = min(max_w, probe.ink.x1 - min(probe.ink.x0, 0) + 2 * pad_x)
    return PillPlan(w, h, probe.size, len(probe.lines), height / 2)


def pill(
    canvas: Image.Image,
    text: str,
    field: str,
    box: Box,
    plan: PillPlan,
    fill: RGB,
    placements: list[TextPlacement],
) -> None:
    """Draw a pill (badge) or button in ``box`` with ``text`` centred, as planned."""
    around = np.asarray(canvas.crop((box.x0, box.y0, box.x1, box.y1))).reshape(-1, 3)
    bg = tuple(int(v) for v in np.median(around, axis=0))
    if contrast_ratio(fill, bg) < 1.6:  # the shape would vanish into what is behind it (a dark scrim)
        fill = WHITE if relative_luminance(bg) < 0.3 else INK
    fill, tcol = button_colours(fill)
    paste_shape(canvas, box, fill, radius=min(plan.radius, box.h / 2))
    pad_x = round(plan.radius)
    text_box = Box(box.x0 + pad_x // 2, box.y0, box.x1 - pad_x // 2, box.y1)
    layout = fit_text(
        text,
        text_box,
        max_size=plan.size,
        min_size=plan.size,
        max_lines=plan.lines,
        align="center",
        valign="middle",
        field=field,
    )
    placements.append(draw_text(canvas, layout, tcol, field))
