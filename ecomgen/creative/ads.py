"""Ad creatives: the layout templates and ``render_ad`` (torch-free: numpy + Pillow).

``validate_ad_fields`` (:mod:`ecomgen.creative.fields`, re-exported here) turns the raw request fields
into an :class:`AdFields` (or raises a :class:`RequestError` naming the field); ``render_ad(product,
fields, template)`` draws one creative at the exact format size with the primitives of
:mod:`ecomgen.creative.drawing`. Templates (``TEMPLATES``):

0. ``panel``: the product on its own backdrop, a solid brand-coloured panel with the text.
1. ``editorial``: light background, dark headline, price in the brand colour, a brand button.
2. ``scrim``: the product as large as the canvas allows, text on a gradient scrim over it.

Every text is fitted to its box by :func:`ecomgen.creative.text.fit_text` (wrapped, shrunk, never
clipped) and its colour is checked against the actual pixels behind it (WCAG AA 4.5:1 for all ad
text, stricter than the 3:1 that large text needs) and adjusted, or given a plate, when it fails.
The 1080x1920 story format keeps text out of the top 250 px and bottom 340 px, where apps overlay UI.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageFilter

from ecomgen.creative.drawing import (
    INK,
    WHITE,
    PillPlan,
    TextPlacement,
    draw_text,
    fill_alpha,
    fill_box,
    from_hls,
    gradient,
    hls,
    pill,
    pill_plan,
    rounded_mask,
    shadow,
    text_on,
)
from ecomgen.creative.fields import (
    ENCODINGS,
    FORMATS,
    MAX_VARIANTS,
    AdFields,
    Money,
    parse_colour,
    parse_price,
    validate_ad_fields,
)
from ecomgen.creative.text import RGB, Align, Box, TextLayout, VAlign, fit_text
from ecomgen.errors import RequestError

# The request fields live in ecomgen.creative.fields; they are part of this module's API too.
__all__ = [
    "ENCODINGS",
    "FORMATS",
    "MAX_VARIANTS",
    "TEMPLATES",
    "AdFields",
    "Money",
    "Palette",
    "TextPlacement",
    "palette_for",
    "parse_colour",
    "parse_price",
    "render_ad",
    "validate_ad_fields",
]

TEMPLATES = ("panel", "editorial", "scrim")
CHARCOAL: RGB = (31, 36, 48)
SALE_RED: RGB = (200, 30, 45)


@dataclass(frozen=True)
class Palette:
    backdrop: RGB  # behind a studio product (its own edge colour)
    studio: bool  # the product photo has a near-uniform border: extend it seamlessly
    accent: RGB  # brand colour, or a deep tone of the product's dominant colour
    accent_dark: RGB  # for scrims


def _edge_colour(img: np.ndarray) -> tuple[RGB, float]:
    h, w = img.shape[:2]
    k = max(2, round(0.03 * min(h, w)))
    ring = np.concatenate(
        [
            img[:k].reshape(-1, 3),
            img[-k:].reshape(-1, 3),
            img[:, :k].reshape(-1, 3),
            img[:, -k:].reshape(-1, 3),
        ]
    ).astype(np.float32)
    med = np.median(ring, axis=0)
    uniform = float(np.mean(np.linalg.norm(ring - med, axis=1) < 18.0))
    return (int(med[0]), int(med[1]), int(med[2])), uniform


def _dominant_colour(img: np.ndarray, backdrop: RGB) -> RGB | None:
    """The product's most prominent saturated colour (pixels far from the backdrop), or None if neutral."""
    px = img.reshape(-1, 3).astype(np.float32)
    fg = px[np.linalg.norm(px - np.array(backdrop, np.float32), axis=1) > 40.0]
    if len(fg) < 0.03 * len(px):
        fg = px
    strip = Image.fromarray(fg[None, :, :].astype(np.uint8))
    q = strip.quantize(colors=6, method=Image.Quantize.MEDIANCUT)
    pal = q.getpalette() or []
    best, best_score = None, 0.0
    for count, index in q.getcolors() or []:
        idx = int(index)  # type: ignore[arg-type]  # a palette index: the image is mode "P"
        rgb = (pal[3 * idx], pal[3 * idx + 1], pal[3 * idx + 2])
        _, lightness, s = hls(rgb)
        chroma = s * (1 - abs(2 * lightness - 1))
        score = count * chroma
        if chroma > 0.12 and score > best_score:
            best, best_score = rgb, score
    return best


def palette_for(img: np.ndarray, brand: RGB | None) -> Palette:
    backdrop, uniform = _edge_colour(img)
    if brand is not None:
        accent = brand
    else:
        dom = _dominant_colour(img, backdrop)
        if dom is None:
            accent = CHARCOAL
        else:
            h, _, s = hls(dom)
            accent = from_hls(h, 0.30, min(max(s, 0.35), 0.70))
    h, lightness, s = hls(accent)
    accent_dark = from_hls(h, min(lightness, 0.14), s * 0.8)
    return Palette(backdrop, uniform >= 0.85, accent, accent_dark)


# --------------------------------------------------------------------------------- product placement


def _scale(img: Image.Image, w: int, h: int) -> Image.Image:
    """High-quality resize: Lanczos, plus a light unsharp mask when enlarging (x4 SR is still soft)."""
    out = img.resize((max(1, w), max(1, h)), Image.Resampling.LANCZOS, reducing_gap=3.0)
    if w > img.width * 1.5:
        out = out.filter(ImageFilter.UnsharpMask(radius=2.0, percent=60, threshold=2))
    return out


MAX_UPSCALE = 4.0  # beyond this a 256x192 close-up turns visibly soft; it then sits smaller on the page


def _contain(img: Image.Image, box: Box) -> tuple[Image.Image, Box]:
    s = min(box.w / img.width, box.h / img.height, MAX_UPSCALE)
    w, h = round(img.width * s), round(img.height * s)
    x, y = box.x0 + (box.w - w) // 2, box.y0 + (box.h - h) // 2
    return _scale(img, w, h), Box(x, y, x + w, y + h)


def _cover(img: Image.Image, w: int, h: int) -> Image.Image:
    s = max(w / img.width, h / img.height)
    sw, sh = max(w, round(img.width * s)), max(h, round(img.height * s))
    big = img.resize((sw, sh), Image.Resampling.BILINEAR)
    x, y = (sw - w) // 2, (sh - h) // 2
    return big.crop((x, y, x + w, y + h))


def _blurred_backdrop(img: Image.Image, w: int, h: int, darken: float) -> Image.Image:
    """A soft, darkened cover-fit of the photo: blur at 1/8 size (cheap), then enlarge."""
    small = _cover(img, max(8, w // 8), max(8, h // 8)).filter(ImageFilter.GaussianBlur(6))
    arr = np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float32) * (1 - darken)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _autocrop(img: np.ndarray, backdrop: RGB) -> np.ndarray:
    """Trim a studio shot's empty margins (keeping 6% air) so the product, not the backdrop, is scaled."""
    d = np.abs(img.astype(np.int16) - np.array(backdrop, np.int16)).max(axis=2) > 28
    ys, xs = np.nonzero(d)
    if len(ys) < 0.02 * d.size:
        return img
    h, w = d.shape
    y0, y1 = np.percentile(ys, [0.2, 99.8]).astype(int)
    x0, x1 = np.percentile(xs, [0.2, 99.8]).astype(int)
    pad = round(0.06 * max(y1 - y0, x1 - x0))
    y0, y1, x0, x1 = max(0, y0 - pad), min(h, y1 + pad + 1), max(0, x0 - pad), min(w, x1 + pad + 1)
    return np.ascontiguousarray(img[y0:y1, x0:x1])


def _tight_cutout(product: np.ndarray, alpha: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo and its matte cropped to the product (alpha >= 8) with 4% air."""
    ys, xs = np.nonzero(alpha >= 8)
    if ys.size == 0:
        raise RequestError("product: no product found in the photo (the cut-out is empty)")
    h, w = alpha.shape
    pad = round(0.04 * max(ys.max() - ys.min(), xs.max() - xs.min()))
    y0, y1 = max(0, ys.min() - pad), min(h, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(w, xs.max() + pad + 1)
    return np.ascontiguousarray(product[y0:y1, x0:x1]), np.ascontiguousarray(alpha[y0:y1, x0:x1])


def _on_white(img: Image.Image) -> Image.Image:
    """An RGBA cut-out over white (for reading colours); RGB as it is."""
    if img.mode != "RGBA":
        return img
    base = Image.new("RGB", img.size, WHITE)
    base.paste(img.convert("RGB"), (0, 0), img.getchannel("A"))
    return base


def _feather_mask(w: int, h: int, edge: int) -> Image.Image:
    """Opaque inside, fading to 0 over ``edge`` px at the border: a studio photo melts into its backdrop."""
    ramp = lambda n: np.clip(np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / max(edge, 1), 0, 1)  # noqa: E731
    m = np.outer(ramp(h), ramp(w))
    return Image.fromarray((m * 255).astype(np.uint8))


def _place_product_img(
    canvas: Image.Image, product: Image.Image, area: Box, pal: Palette, scale: float
) -> Box:
    """The product contain-fitted in ``area`` (times ``scale``): studio shots blend into the backdrop,
    other photos sit on a rounded card with a soft shadow."""
    inner = Box(
        area.x0 + round(area.w * (1 - scale) / 2),
        area.y0 + round(area.h * (1 - scale) / 2),
        area.x1 - round(area.w * (1 - scale) / 2),
        area.y1 - round(area.h * (1 - scale) / 2),
    )
    img, box = _contain(product, inner)
    if img.mode == "RGBA":  # a cut-out: the product itself on the layout, no card, no rectangle
        canvas.paste(img.convert("RGB"), (box.x0, box.y0), img.getchannel("A"))
    elif pal.studio:
        canvas.paste(
            img, (box.x0, box.y0), _feather_mask(box.w, box.h, max(4, round(0.05 * min(box.w, box.h))))
        )
    else:
        r = max(8, round(0.03 * min(box.w, box.h)))
        shadow(canvas, box, r, blur=max(6, box.w // 40), offset=max(4, box.h // 60), strength=0.45)
        canvas.paste(img, (box.x0, box.y0), rounded_mask((box.w, box.h), r))
    return box


# ----------------------------------------------------------------------------------------- templates


@dataclass
class _Ctx:
    canvas: Image.Image
    product: Image.Image
    fields: AdFields
    pal: Palette
    w: int
    h: int
    u: float  # unit: 1 px at 1080 on the short side
    placements: list[TextPlacement] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return {
            "1080x1080": "square",
            "1080x1350": "portrait",
            "1200x628": "landscape",
            "1080x1920": "story",
        }[self.fields.format]

    def px(self, v: float) -> int:
        return round(v * self.u)


@dataclass
class _Item:
    kind: str  # "badge" | "title" | "price" | "cta"
    box: Box  # where it goes (absolute after planning)
    layout: TextLayout | None = None  # title and price
    pill: PillPlan | None = None


def _fit_title(ctx: _Ctx, box: Box, align: Align, max_size: int | None = None) -> TextLayout:
    """Headline: 2 or 3 lines at the largest size (3 only when that is clearly bigger type: fewer lines
    read faster); else up to 4 lines, smaller; else as many lines as it takes, at the minimum size."""
    top = max_size or ctx.px(76)

    def fit(lines: int | None, lo: int) -> TextLayout | None:
        try:
            return fit_text(
                ctx.fields.title,
                box,
                max_size=top,
                min_size=min(lo, top),
                max_lines=lines,
                align=align,
                field="title",
            )
        except RequestError:
            return None

    two, three = fit(2, ctx.px(40)), fit(3, ctx.px(40))
    if two and three:
        return three if three.size > two.size * 1.15 else two
    best = two or three or fit(4, ctx.px(32))
    if best is not None:
        return best
    # The last resort raises the TextFitError naming the field.
    return fit_text(
        ctx.fields.title, box, max_size=top, min_size=min(ctx.px(26), top), align=align, field="title"
    )


def _shift(layout: TextLayout, dx: int, dy: int) -> TextLayout:
    b, k = layout.box, layout.ink
    return TextLayout(
        layout.lines,
        layout.size,
        layout.weight,
        tuple((x + dx, y + dy) for x, y in layout.origins),
        Box(k.x0 + dx, k.y0 + dy, k.x1 + dx, k.y1 + dy),
        Box(b.x0 + dx, b.y0 + dy, b.x1 + dx, b.y1 + dy),
    )


def _plan_stack(
    ctx: _Ctx,
    col: Box,
    *,
    align: Align = "left",
    valign: VAlign = "middle",
    badge: bool = True,
    cta: bool = True,
    title_max: int | None = None,
) -> tuple[list[_Item], Box]:
    """Badge, title, price and CTA stacked in ``col``: fitted, then positioned as one block."""
    f = ctx.fields
    gap = ctx.px(24)
    pill_h, cta_h, price_h = ctx.px(70), ctx.px(92), ctx.px(124)
    items: list[_Item] = []
    if badge and f.badge:
        bp = pill_plan(f.badge, "badge", pill_h, col.w)
        items.append(_Item("badge", Box(0, 0, bp.w, bp.h), pill=bp))
    cta_item = None
    if cta and f.cta:
        cp = pill_plan(f.cta, "cta", cta_h, col.w)
        cta_item = _Item("cta", Box(0, 0, min(col.w, max(cp.w, ctx.px(260))), cp.h), pill=cp)
    reserved = sum(it.box.h + gap for it in items) + price_h + gap + (cta_h + gap if cta_item else 0)
    title = _fit_title(ctx, Box(0, 0, col.w, max(ctx.px(80), col.h - reserved)), align, title_max)
    items.append(_Item("title", Box(0, 0, col.w, title.ink.y1), title))
    price = fit_text(
        f.price.format(),
        Box(0, 0, col.w, price_h),
        max_size=ctx.px(112),
        min_size=ctx.px(30),
        max_lines=1,
        align=align,
        field="price",
    )
    items.append(_Item("price", Box(0, 0, col.w, price.ink.y1), price))
    if cta_item:
        items.append(cta_item)
    total = sum(it.box.h for it in items) + gap * (len(items) - 1) + (gap // 2 if cta_item else 0)
    y = col.y0 if valign == "top" else col.y1 - total if valign == "bottom" else col.y0 + (col.h - total) // 2
    y = max(y, col.y0)
    top = y
    placed = []
    for it in items:
        bw = it.box.w
        x = col.x0 if align == "left" else col.x0 + (col.w - bw) // 2 if align == "center" else col.x1 - bw
        if it.kind == "cta":
            y += gap // 2  # a little more air before the button
        box = Box(x, y, x + bw, y + it.box.h)
        layout = _shift(it.layout, col.x0, y) if it.layout is not None else None
        placed.append(_Item(it.kind, box, layout, it.pill))
        y += it.box.h + gap
    return placed, Box(col.x0, top, col.x1, y - gap)


def _draw_stack(ctx: _Ctx, items: list[_Item], on: RGB, price_colour: RGB, button: RGB) -> None:
    f = ctx.fields
    for it in items:
        if it.kind in ("badge", "cta"):
            assert it.pill is not None
            text, fill = (f.badge, _badge_fill(ctx)) if it.kind == "badge" else (f.cta, button)
            pill(ctx.canvas, text or "", it.kind, it.box, it.pill, fill, ctx.placements)
        else:
            assert it.layout is not None
            colour = on if it.kind == "title" else price_colour
            ctx.placements.append(draw_text(ctx.canvas, it.layout, colour, it.kind))


def _badge_fill(ctx: _Ctx) -> RGB:
    b = ctx.fields.badge or ""
    return SALE_RED if ("%" in b or b.startswith(("-", "−"))) else ctx.pal.accent


def _corner_badge(ctx: _Ctx, x: int, y: int) -> None:
    f = ctx.fields
    if f.badge:
        bp = pill_plan(f.badge, "badge", ctx.px(74), ctx.w // 2)
        pill(
            ctx.canvas, f.badge, "badge", Box(x, y, x + bp.w, y + bp.h), bp, _badge_fill(ctx), ctx.placements
        )


def _panel(ctx: _Ctx) -> None:
    """Product on its backdrop; a solid accent panel (bottom, or right in landscape) carries the text."""
    w, h, pal, c = ctx.w, ctx.h, ctx.pal, ctx.canvas
    m = ctx.px(56)
    top = 250 if ctx.kind == "story" else 0
    if ctx.kind == "landscape":
        split = round(w * 0.55)
        area, panel = Box(0, 0, split, h), Box(split, 0, w, h)
    else:
        split = round(h * {"square": 0.64, "portrait": 0.66, "story": 0.54}[ctx.kind])
        area, panel = Box(0, 0, w, split), Box(0, split, w, h)
    if pal.studio:
        fill_box(c, area, pal.backdrop)
    else:
        c.paste(_blurred_backdrop(_on_white(ctx.product), area.w, area.h, 0.35), (area.x0, area.y0))
    _place_product(ctx, Box(area.x0 + m, max(area.y0 + m // 2, top), area.x1 - m, area.y1 - m // 2))
    fill_box(c, panel, pal.accent)
    on = text_on(pal.accent)
    button = WHITE if on == WHITE else INK
    _corner_badge(ctx, area.x0 + ctx.px(40), max(area.y0 + ctx.px(40), top))
    col = _story_safe(ctx, Box(panel.x0 + m, panel.y0 + ctx.px(44), panel.x1 - m, panel.y1 - ctx.px(44)))
    f = ctx.fields
    if ctx.kind in ("square", "portrait") and f.cta:
        # Title and price on the left; the button on the right, centred on the panel.
        cp = pill_plan(f.cta, "cta", ctx.px(92), ctx.px(380))
        cw = max(cp.w, ctx.px(240))
        text_col = Box(col.x0, col.y0, col.x1 - cw - ctx.px(40), col.y1)
        items, _ = _plan_stack(ctx, text_col, badge=False, cta=False, title_max=ctx.px(68))
        _draw_stack(ctx, items, on, on, button)
        y = col.y0 + (col.h - cp.h) // 2
        pill(c, f.cta, "cta", Box(col.x1 - cw, y, col.x1, y + cp.h), cp, button, ctx.placements)
    else:
        items, _ = _plan_stack(ctx, col, badge=False, title_max=ctx.px(80 if ctx.kind == "story" else 68))
        _draw_stack(ctx, items, on, on, button)


def _editorial(ctx: _Ctx) -> None:
    """Light page: dark headline, price in the accent colour, accent button; product beside or below."""
    w, h, pal, c = ctx.w, ctx.h, ctx.pal, ctx.canvas
    m = ctx.px(64)
    light = pal.studio and hls(pal.backdrop)[1] > 0.80
    bg = pal.backdrop if light else from_hls(hls(pal.accent)[0], 0.95, 0.22)
    fill_box(c, Box(0, 0, w, h), bg)
    if ctx.kind in ("landscape", "square"):
        split = round(w * 0.47)
        fill_box(c, Box(m, m, m + ctx.px(10), h - m), pal.accent)  # an accent rule marks the text column
        col = Box(m + ctx.px(44), m, split - ctx.px(12), h - m)
        _place_product(ctx, Box(split, m // 2, w - m // 2, h - m // 2))
        items, _ = _plan_stack(ctx, col, title_max=ctx.px(72))
        _draw_stack(ctx, items, INK, pal.accent, pal.accent)
        return
    # Portrait and story: badge + headline on top, product in the middle, price + button at the bottom.
    safe_top, safe_bottom = (250, h - 340) if ctx.kind == "story" else (m, h - m)
    f = ctx.fields
    y = safe_top
    if f.badge:
        bp = pill_plan(f.badge, "badge", ctx.px(70), w - 2 * m)
        pill(
            c,
            f.badge,
            "badge",
            Box((w - bp.w) // 2, y, (w + bp.w) // 2, y + bp.h),
            bp,
            _badge_fill(ctx),
            ctx.placements,
        )
        y += bp.h + ctx.px(24)
    title = _fit_title(ctx, Box(m, y, w - m, y + ctx.px(250)), "center", ctx.px(76))
    ctx.placements.append(draw_text(c, title, INK, "title"))
    foot_h = ctx.px(136)
    foot = Box(m, safe_bottom - foot_h, w - m, safe_bottom)
    _place_product(ctx, Box(m, title.ink.y1 + ctx.px(36), w - m, foot.y0 - ctx.px(36)), scale=1.0)
    price_text = f.price.format()
    if f.cta:
        cp = pill_plan(f.cta, "cta", ctx.px(96), ctx.px(440))
        cw = max(cp.w, ctx.px(280))
        price = fit_text(
            price_text,
            Box(foot.x0, foot.y0, foot.x1 - cw - ctx.px(40), foot.y1),
            max_size=ctx.px(112),
            min_size=ctx.px(30),
            max_lines=1,
            valign="middle",
            field="price",
        )
        ctx.placements.append(draw_text(c, price, pal.accent, "price"))
        y = foot.y0 + (foot_h - cp.h) // 2
        pill(c, f.cta, "cta", Box(foot.x1 - cw, y, foot.x1, y + cp.h), cp, pal.accent, ctx.placements)
    else:
        price = fit_text(
            price_text,
            foot,
            max_size=ctx.px(112),
            min_size=ctx.px(30),
            max_lines=1,
            align="center",
            valign="middle",
            field="price",
        )
        ctx.placements.append(draw_text(c, price, pal.accent, "price"))


def _scrim(ctx: _Ctx) -> None:
    """The product as large as it stays sharp, text on a gradient scrim in the accent's darkest tone."""
    w, h, pal, c = ctx.w, ctx.h, ctx.pal, ctx.canvas
    m = ctx.px(60)
    if pal.studio:
        fill_box(c, Box(0, 0, w, h), pal.backdrop)
    else:
        c.paste(_blurred_backdrop(_on_white(ctx.product), w, h, 0.45), (0, 0))
    if ctx.kind == "landscape":
        _place_product(ctx, Box(round(w * 0.40), 0, w, h), scale=0.96)
        items, block = _plan_stack(ctx, Box(m, m, round(w * 0.46), h - m), title_max=ctx.px(72))
        right = max(max(it.layout.ink.x1 if it.layout else it.box.x1 for it in items), block.x0)
        solid = right + ctx.px(40)
        fill_alpha(c, Box(0, 0, solid, h), pal.accent_dark, 0.94)
        gradient(
            c, Box(solid, 0, min(w, solid + round(w * 0.22)), h), pal.accent_dark, 0.94, 0.0, vertical=False
        )
        _draw_stack(ctx, items, WHITE, WHITE, WHITE)
        return
    top = 250 if ctx.kind == "story" else 0
    bottom = h - 340 if ctx.kind == "story" else h - m
    col = Box(m, round(h * 0.42), w - m, bottom)
    items, block = _plan_stack(ctx, col, valign="bottom", title_max=ctx.px(80))
    solid = block.y0 - ctx.px(50)
    ramp = round(h * 0.20)
    # The product fills the space above the text and dips into the ramp, not under the words.
    _place_product(ctx, Box(0, top, w, max(top + ramp, solid - ramp // 3)), scale=0.96)
    gradient(c, Box(0, max(0, solid - ramp), w, solid), pal.accent_dark, 0.0, 0.92)
    fill_alpha(c, Box(0, solid, w, h), pal.accent_dark, 0.92)
    _draw_stack(ctx, items, WHITE, WHITE, WHITE)


def _story_safe(ctx: _Ctx, box: Box) -> Box:
    if ctx.kind != "story":
        return box
    return Box(box.x0, max(box.y0, 250), box.x1, min(box.y1, ctx.h - 340))


def _place_product(ctx: _Ctx, area: Box, scale: float = 0.94) -> Box:
    return _place_product_img(ctx.canvas, ctx.product, area, ctx.pal, scale)


def render_ad(
    product: np.ndarray,
    fields: AdFields,
    template: int,
    placements: list[TextPlacement] | None = None,
    alpha: np.ndarray | None = None,
) -> np.ndarray:
    """One creative, HxWx3 uint8 at the exact size of ``fields.format``.

    ``product``: HxWx3 uint8 (the 256x192 x4 close-up, or an uploaded photo). ``alpha``: its matte
    (uint8 HxW, the cut-out), if any: the product then stands on the layout's own background
    instead of in its photo's rectangle. ``template``: an index into :data:`TEMPLATES`.
    ``placements``, if given, receives what was drawn for each text.
    """
    if product.ndim != 3 or product.shape[2] != 3 or product.dtype != np.uint8:
        raise ValueError(f"product must be HxWx3 uint8, got {product.shape} {product.dtype}")
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template must be 0..{len(TEMPLATES) - 1}, got {template}")
    w, h = fields.size
    if alpha is not None:
        product, alpha = _tight_cutout(product, alpha)
    src = Image.fromarray(product if alpha is None else np.dstack([product, alpha]))
    if max(src.size) > 1400:  # a big upload: no layout shows the product larger than this
        src.thumbnail((1400, 1400), Image.Resampling.LANCZOS, reducing_gap=3.0)
    small = src.copy()
    small.thumbnail((256, 256), Image.Resampling.BILINEAR)  # colours are read from a small copy
    pal = palette_for(np.asarray(_on_white(small)), fields.brand_colour)
    if alpha is not None:
        img = src
    else:
        product = np.asarray(src)
        img = Image.fromarray(_autocrop(product, pal.backdrop) if pal.studio else product)
    canvas = Image.new("RGB", (w, h), WHITE)
    # The landscape format is short: type is sized for its height rather than for 1080.
    # Stories are seen full screen on a phone: a little bigger type than the feed formats.
    u = {"1200x628": 628 / 760, "1080x1920": 1.12}.get(fields.format, min(w, h) / 1080)
    ctx = _Ctx(canvas, img, fields, pal, w, h, u)
    (_panel, _editorial, _scrim)[template](ctx)
    if placements is not None:
        placements.extend(ctx.placements)
    out = np.asarray(canvas, dtype=np.uint8)
    assert out.shape == (h, w, 3)
    return out
