"""Ad creatives: request validation and the layout renderer (torch-free: numpy + Pillow).

``validate_ad_fields`` turns the raw request fields into an :class:`AdFields` (or raises a
:class:`RequestError` naming the field); ``render_ad(product, fields, template)`` draws one creative
at the exact format size. Templates (``TEMPLATES``):

0. ``panel``: the product on its own backdrop, a solid brand-coloured panel with the text.
1. ``editorial``: light background, dark headline, price in the brand colour, a brand button.
2. ``scrim``: the product as large as the canvas allows, text on a gradient scrim over it.

Every text is fitted to its box by :func:`ecomgen.creative.text.fit_text` (wrapped, shrunk, never
clipped) and its colour is checked against the actual pixels behind it (WCAG AA 4.5:1 for all ad
text, stricter than the 3:1 that large text needs) and adjusted, or given a plate, when it fails.
The 1080x1920 story format keeps text out of the top 250 px and bottom 340 px, where apps overlay UI.
"""

from __future__ import annotations

import colorsys
import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from ecomgen.creative.text import (
    RGB,
    Align,
    Box,
    TextLayout,
    VAlign,
    adjust_for_contrast,
    check_drawable,
    contrast_ratio,
    fit_text,
    relative_luminance,
    worst_contrast,
)
from ecomgen.errors import RequestError

FORMATS: dict[str, tuple[int, int]] = {  # name -> (width, height)
    "1080x1080": (1080, 1080),
    "1080x1350": (1080, 1350),
    "1200x628": (1200, 628),
    "1080x1920": (1080, 1920),
}
ENCODINGS = ("jpeg", "png", "webp")
TEMPLATES = ("panel", "editorial", "scrim")
MAX_VARIANTS = 16
# Limits in display columns: East Asian wide/fullwidth characters count 2 (they are ~2x as wide).
LIMITS = {"title": 70, "badge": 14, "cta": 24}
MIN_CONTRAST = 4.5  # AA for normal text, applied to all ad text

# ------------------------------------------------------------------------------------------ currency


@dataclass(frozen=True)
class Currency:
    code: str
    symbol: str
    before: bool  # symbol before the amount
    space: bool  # a (non-breaking) space between symbol and amount
    decimals: int
    point: str = "."
    group: str = ","
    indian: bool = False  # 1,23,45,678 grouping


NBSP = "\u00a0"
CURRENCIES: dict[str, Currency] = {
    c.code: c
    for c in [
        Currency("USD", "$", True, False, 2),
        Currency("EUR", "€", False, True, 2, ",", "."),
        Currency("GBP", "£", True, False, 2),
        Currency("JPY", "¥", True, False, 0),
        Currency("CNY", "¥", True, False, 2),
        Currency("KRW", "₩", True, False, 0),
        Currency("INR", "₹", True, False, 2, indian=True),
        Currency("CHF", "CHF", True, True, 2, ".", "’"),
        Currency("CAD", "$", True, False, 2),
        Currency("AUD", "$", True, False, 2),
        Currency("NZD", "$", True, False, 2),
        Currency("MXN", "$", True, False, 2),
        Currency("HKD", "HK$", True, False, 2),
        Currency("SGD", "S$", True, False, 2),
        Currency("TWD", "NT$", True, False, 0),
        Currency("BRL", "R$", True, True, 2, ",", "."),
        Currency("SEK", "kr", False, True, 2, ",", NBSP),
        Currency("NOK", "kr", False, True, 2, ",", NBSP),
        Currency("DKK", "kr.", False, True, 2, ",", "."),
        Currency("PLN", "zł", False, True, 2, ",", NBSP),
        Currency("CZK", "Kč", False, True, 2, ",", NBSP),
        Currency("TRY", "₺", True, False, 2, ",", "."),
        Currency("ZAR", "R", True, False, 2),
        Currency("AED", "AED", True, True, 2),
    ]
}
# Symbols accepted in place of a code: only unambiguous ones ("$", "¥", "kr" name several currencies).
SYMBOLS = {"€": "EUR", "£": "GBP", "₹": "INR", "₩": "KRW", "₺": "TRY", "zł": "PLN", "Kč": "CZK"}
AMBIGUOUS = {"$": "USD, CAD, AUD, NZD, MXN", "¥": "JPY, CNY", "kr": "SEK, NOK, DKK", "R": "ZAR"}


@dataclass(frozen=True)
class Money:
    amount: Decimal
    currency: Currency

    def format(self) -> str:
        """The price as shoppers of the currency's main market write it: €-suffix with a comma for EUR."""
        c = self.currency
        q = self.amount.quantize(Decimal(1).scaleb(-c.decimals))
        whole, _, frac = f"{q:f}".partition(".")
        if c.indian and len(whole) > 3:
            head, tail = whole[:-3], whole[-3:]
            groups = [head[max(0, i - 2) : i] for i in range(len(head), 0, -2)][::-1]
            whole = c.group.join([*groups, tail])
        else:
            whole = c.group.join(whole[max(0, i - 3) : i] for i in range(len(whole), 0, -3)[::-1])
        number = whole + (c.point + frac if c.decimals else "")
        sep = NBSP if c.space else ""
        return f"{c.symbol}{sep}{number}" if c.before else f"{number}{sep}{c.symbol}"


def parse_currency(value: str) -> Currency:
    v = value.strip()
    if v in AMBIGUOUS:
        raise RequestError(f"currency: {v!r} is ambiguous ({AMBIGUOUS[v]}); give the ISO 4217 code")
    code = SYMBOLS.get(v, v.upper())
    if code not in CURRENCIES:
        raise RequestError(
            f"currency: {value!r} is not a supported ISO 4217 code or symbol "
            f"(supported: {', '.join(CURRENCIES)})"
        )
    return CURRENCIES[code]


_PRICE = re.compile(r"(0|[1-9][0-9]{0,8})(?:\.([0-9]+))?")


def parse_price(price: str, currency: str) -> Money:
    """A plain decimal amount ("19.99", "1980"; no signs, symbols or thousands separators) and a currency
    (ISO 4217 code such as "EUR", or an unambiguous symbol such as "€")."""
    cur = parse_currency(currency)
    m = _PRICE.fullmatch(price.strip())
    if m is None:
        raise RequestError(
            f"price: {price!r} does not parse; write a plain amount with a '.' decimal point, e.g. 19.99"
        )
    frac = m.group(2) or ""
    if len(frac) > cur.decimals:
        unit = "no minor unit" if cur.decimals == 0 else f"{cur.decimals} decimals"
        raise RequestError(f"price: {price!r} has more decimals than {cur.code} allows ({unit})")
    try:
        amount = Decimal(price.strip())
    except InvalidOperation as e:  # unreachable after the regex, kept as a guard
        raise RequestError(f"price: {price!r} does not parse") from e
    return Money(amount, cur)


# ---------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class AdFields:
    title: str
    price: Money
    badge: str | None
    cta: str | None
    format: str
    brand_colour: RGB | None
    encoding: str
    variants: int

    @property
    def size(self) -> tuple[int, int]:
        return FORMATS[self.format]


def _columns(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _text_field(name: str, value: str | bytes | None, required: bool) -> str | None:
    if value is None or (isinstance(value, bytes | str) and len(value) == 0):
        if required:
            raise RequestError(f"{name}: required")
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(
                f"{name}: not valid UTF-8 (byte 0x{value[e.start]:02x} at offset {e.start})"
            ) from e
    text = unicodedata.normalize("NFC", value)
    for i, ch in enumerate(text):
        cat = unicodedata.category(ch)
        if cat == "Cc" or cat in ("Zl", "Zp"):
            raise RequestError(
                f"{name}: control character U+{ord(ch):04X} ({unicodedata.name(ch, 'control')}) "
                f"at position {i} is not allowed"
            )
    text = " ".join(text.split())
    if not text:
        if required:
            raise RequestError(f"{name}: required")
        return None
    limit = LIMITS[name]
    if _columns(text) > limit:
        raise RequestError(
            f"{name}: too long ({_columns(text)} columns, at most {limit}; CJK characters count 2)"
        )
    check_drawable(name, text)
    return text


def _str_field(name: str, value: str | bytes) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"{name}: not valid UTF-8") from e
    return value


def parse_colour(value: str, name: str = "brand_colour") -> RGB:
    if not re.fullmatch(r"#[0-9A-Fa-f]{6}", value.strip()):
        raise RequestError(f"{name}: {value!r} is not a colour; write #RRGGBB, e.g. #1A73E8")
    v = value.strip()
    return (int(v[1:3], 16), int(v[3:5], 16), int(v[5:7], 16))


def validate_ad_fields(
    *,
    title: str | bytes,
    price: str | bytes,
    currency: str | bytes,
    badge: str | bytes | None = None,
    cta: str | bytes | None = None,
    format: str | bytes = "1080x1080",
    brand_colour: str | bytes | None = None,
    encoding: str | bytes = "jpeg",
    variants: int = 1,
) -> AdFields:
    """Check and normalise one ad request; each problem raises RequestError naming its field."""
    if not isinstance(variants, int | np.integer) or not 1 <= int(variants) <= MAX_VARIANTS:
        raise RequestError(f"variants: must be 1..{MAX_VARIANTS}, got {variants!r}")
    fmt = _str_field("format", format).strip().lower()
    if fmt not in FORMATS:
        raise RequestError(f"format: {fmt!r} is not one of {', '.join(FORMATS)}")
    enc = _str_field("encoding", encoding).strip().lower()
    enc = "jpeg" if enc == "jpg" else enc
    if enc not in ENCODINGS:
        raise RequestError(f"encoding: {enc!r} is not one of {', '.join(ENCODINGS)}")
    colour = None
    if brand_colour is not None and len(brand_colour) > 0:
        colour = parse_colour(_str_field("brand_colour", brand_colour))
    t = _text_field("title", title, required=True)
    assert t is not None
    money = parse_price(_str_field("price", price), _str_field("currency", currency))
    check_drawable("currency", money.format())
    return AdFields(
        title=t,
        price=money,
        badge=_text_field("badge", badge, required=False),
        cta=_text_field("cta", cta, required=False),
        format=fmt,
        brand_colour=colour,
        encoding=enc,
        variants=int(variants),
    )


# -------------------------------------------------------------------------------------- colour helpers


def _hls(rgb: RGB) -> tuple[float, float, float]:
    return colorsys.rgb_to_hls(*(c / 255.0 for c in rgb))


def _from_hls(h: float, lightness: float, s: float) -> RGB:
    r, g, b = colorsys.hls_to_rgb(h, min(max(lightness, 0.0), 1.0), min(max(s, 0.0), 1.0))
    return (round(r * 255), round(g * 255), round(b * 255))


def _mix(a: RGB, b: RGB, t: float) -> RGB:
    return (
        round(a[0] + (b[0] - a[0]) * t),
        round(a[1] + (b[1] - a[1]) * t),
        round(a[2] + (b[2] - a[2]) * t),
    )


WHITE: RGB = (255, 255, 255)
INK: RGB = (24, 26, 32)  # near-black for text on light backgrounds
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
        _, lightness, s = _hls(rgb)
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
            h, _, s = _hls(dom)
            accent = _from_hls(h, 0.30, min(max(s, 0.35), 0.70))
    h, lightness, s = _hls(accent)
    accent_dark = _from_hls(h, min(lightness, 0.14), s * 0.8)
    return Palette(backdrop, uniform >= 0.85, accent, accent_dark)


# ------------------------------------------------------------------------------------- pixel helpers


def _fill(canvas: Image.Image, box: Box, colour: RGB) -> None:
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


_rounded_mask = rounded_mask


def _paste_shape(canvas: Image.Image, box: Box, colour: RGB, radius: float, opacity: float = 1.0) -> None:
    mask = _rounded_mask((box.w, box.h), radius)
    if opacity < 1.0:
        mask = mask.point(lambda v: int(v * opacity))
    canvas.paste(Image.new("RGB", (box.w, box.h), colour), (box.x0, box.y0), mask)


def _shadow(canvas: Image.Image, box: Box, radius: float, blur: int, offset: int, strength: float) -> None:
    pad = blur * 3
    w, h = box.w + 2 * pad, box.h + 2 * pad
    m = Image.new("L", (w, h), 0)
    m.paste(_rounded_mask((box.w, box.h), radius), (pad, pad))
    m = m.filter(ImageFilter.GaussianBlur(blur)).point(lambda v: int(v * strength))
    canvas.paste(Image.new("RGB", (w, h), (0, 0, 0)), (box.x0 - pad, box.y0 - pad + offset), m)


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
    if pal.studio:
        canvas.paste(
            img, (box.x0, box.y0), _feather_mask(box.w, box.h, max(4, round(0.05 * min(box.w, box.h))))
        )
    else:
        r = max(8, round(0.03 * min(box.w, box.h)))
        _shadow(canvas, box, r, blur=max(6, box.w // 40), offset=max(4, box.h // 60), strength=0.45)
        canvas.paste(img, (box.x0, box.y0), _rounded_mask((box.w, box.h), r))
    return box


def _gradient(
    canvas: Image.Image, box: Box, colour: RGB, a0: float, a1: float, vertical: bool = True
) -> None:
    """Alpha ramp from ``a0`` (top or left) to ``a1`` (bottom or right), eased (smoothstep)."""
    n = box.h if vertical else box.w
    t = np.linspace(0.0, 1.0, n)
    t = t * t * (3 - 2 * t)
    a = a0 + (a1 - a0) * t
    m = np.repeat(a[:, None], box.w, axis=1) if vertical else np.repeat(a[None, :], box.h, axis=0)
    mask = Image.fromarray((np.clip(m, 0, 1) * 255).astype(np.uint8))
    canvas.paste(Image.new("RGB", (box.w, box.h), colour), (box.x0, box.y0), mask)


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
            _paste_shape(trial, Box(0, 0, box.w, box.h), pc, radius=pad, opacity=opacity)
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


def _button_colours(fill: RGB) -> tuple[RGB, RGB]:
    """(fill, text): white or ink text, whichever contrasts more; the fill is darkened until it passes."""
    text = WHITE if contrast_ratio(fill, WHITE) >= contrast_ratio(fill, INK) else INK
    f = fill
    for _ in range(40):
        if contrast_ratio(f, text) >= MIN_CONTRAST:
            break
        h, lightness, s = _hls(f)
        f = _from_hls(h, lightness - 0.02 if text == WHITE else lightness + 0.02, s)
    return f, text


@dataclass(frozen=True)
class _PillPlan:
    w: int
    h: int
    size: int  # text size
    lines: int
    radius: float


def _pill_plan(text: str, field: str, height: int, max_w: int) -> _PillPlan:
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
    return _PillPlan(w, h, probe.size, len(probe.lines), height / 2)


def _pill(
    canvas: Image.Image,
    text: str,
    field: str,
    box: Box,
    plan: _PillPlan,
    fill: RGB,
    placements: list[TextPlacement],
) -> None:
    """Draw a pill (badge) or button in ``box`` with ``text`` centred, as planned."""
    around = np.asarray(canvas.crop((box.x0, box.y0, box.x1, box.y1))).reshape(-1, 3)
    bg = tuple(int(v) for v in np.median(around, axis=0))
    if contrast_ratio(fill, bg) < 1.6:  # the shape would vanish into what is behind it (a dark scrim)
        fill = WHITE if relative_luminance(bg) < 0.3 else INK
    fill, tcol = _button_colours(fill)
    _paste_shape(canvas, box, fill, radius=min(plan.radius, box.h / 2))
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
    pill: _PillPlan | None = None


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
        bp = _pill_plan(f.badge, "badge", pill_h, col.w)
        items.append(_Item("badge", Box(0, 0, bp.w, bp.h), pill=bp))
    cta_item = None
    if cta and f.cta:
        cp = _pill_plan(f.cta, "cta", cta_h, col.w)
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
            _pill(ctx.canvas, text or "", it.kind, it.box, it.pill, fill, ctx.placements)
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
        bp = _pill_plan(f.badge, "badge", ctx.px(74), ctx.w // 2)
        _pill(
            ctx.canvas, f.badge, "badge", Box(x, y, x + bp.w, y + bp.h), bp, _badge_fill(ctx), ctx.placements
        )


def _text_on(fill: RGB) -> RGB:
    return WHITE if contrast_ratio(fill, WHITE) >= contrast_ratio(fill, INK) else INK


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
        _fill(c, area, pal.backdrop)
    else:
        c.paste(_blurred_backdrop(ctx.product, area.w, area.h, 0.35), (area.x0, area.y0))
    _place_product(ctx, Box(area.x0 + m, max(area.y0 + m // 2, top), area.x1 - m, area.y1 - m // 2))
    _fill(c, panel, pal.accent)
    on = _text_on(pal.accent)
    button = WHITE if on == WHITE else INK
    _corner_badge(ctx, area.x0 + ctx.px(40), max(area.y0 + ctx.px(40), top))
    col = _story_safe(ctx, Box(panel.x0 + m, panel.y0 + ctx.px(44), panel.x1 - m, panel.y1 - ctx.px(44)))
    f = ctx.fields
    if ctx.kind in ("square", "portrait") and f.cta:
        # Title and price on the left; the button on the right, centred on the panel.
        cp = _pill_plan(f.cta, "cta", ctx.px(92), ctx.px(380))
        cw = max(cp.w, ctx.px(240))
        text_col = Box(col.x0, col.y0, col.x1 - cw - ctx.px(40), col.y1)
        items, _ = _plan_stack(ctx, text_col, badge=False, cta=False, title_max=ctx.px(68))
        _draw_stack(ctx, items, on, on, button)
        y = col.y0 + (col.h - cp.h) // 2
        _pill(c, f.cta, "cta", Box(col.x1 - cw, y, col.x1, y + cp.h), cp, button, ctx.placements)
    else:
        items, _ = _plan_stack(ctx, col, badge=False, title_max=ctx.px(80 if ctx.kind == "story" else 68))
        _draw_stack(ctx, items, on, on, button)


def _editorial(ctx: _Ctx) -> None:
    """Light page: dark headline, price in the accent colour, accent button; product beside or below."""
    w, h, pal, c = ctx.w, ctx.h, ctx.pal, ctx.canvas
    m = ctx.px(64)
    light = pal.studio and _hls(pal.backdrop)[1] > 0.80
    bg = pal.backdrop if light else _from_hls(_hls(pal.accent)[0], 0.95, 0.22)
    _fill(c, Box(0, 0, w, h), bg)
    if ctx.kind in ("landscape", "square"):
        split = round(w * 0.47)
        _fill(c, Box(m, m, m + ctx.px(10), h - m), pal.accent)  # an accent rule marks the text column
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
        bp = _pill_plan(f.badge, "badge", ctx.px(70), w - 2 * m)
        _pill(
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
        cp = _pill_plan(f.cta, "cta", ctx.px(96), ctx.px(440))
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
        _pill(c, f.cta, "cta", Box(foot.x1 - cw, y, foot.x1, y + cp.h), cp, pal.accent, ctx.placements)
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
        _fill(c, Box(0, 0, w, h), pal.backdrop)
    else:
        c.paste(_blurred_backdrop(ctx.product, w, h, 0.45), (0, 0))
    if ctx.kind == "landscape":
        _place_product(ctx, Box(round(w * 0.40), 0, w, h), scale=0.96)
        items, block = _plan_stack(ctx, Box(m, m, round(w * 0.46), h - m), title_max=ctx.px(72))
        right = max(max(it.layout.ink.x1 if it.layout else it.box.x1 for it in items), block.x0)
        solid = right + ctx.px(40)
        _fill_alpha(c, Box(0, 0, solid, h), pal.accent_dark, 0.94)
        _gradient(
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
    _gradient(c, Box(0, max(0, solid - ramp), w, solid), pal.accent_dark, 0.0, 0.92)
    _fill_alpha(c, Box(0, solid, w, h), pal.accent_dark, 0.92)
    _draw_stack(ctx, items, WHITE, WHITE, WHITE)


def _fill_alpha(canvas: Image.Image, box: Box, colour: RGB, alpha: float) -> None:
    if box.w > 0 and box.h > 0:
        canvas.paste(
            Image.new("RGB", (box.w, box.h), colour),
            (box.x0, box.y0),
            Image.new("L", (box.w, box.h), round(alpha * 255)),
        )


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
) -> np.ndarray:
    """One creative, HxWx3 uint8 at the exact size of ``fields.format``.

    ``product``: HxWx3 uint8 (the 256x192 x4 close-up, or an uploaded photo). ``template``: an index into
    :data:`TEMPLATES`. ``placements``, if given, receives what was drawn for each text.
    """
    if product.ndim != 3 or product.shape[2] != 3 or product.dtype != np.uint8:
        raise ValueError(f"product must be HxWx3 uint8, got {product.shape} {product.dtype}")
    if not 0 <= template < len(TEMPLATES):
        raise ValueError(f"template must be 0..{len(TEMPLATES) - 1}, got {template}")
    w, h = fields.size
    src = Image.fromarray(product)
    if max(src.size) > 1400:  # a big upload: no layout shows the product larger than this
        src.thumbnail((1400, 1400), Image.Resampling.LANCZOS, reducing_gap=3.0)
        product = np.asarray(src)
    small = src.copy()
    small.thumbnail((256, 256), Image.Resampling.BILINEAR)  # colours are read from a small copy
    pal = palette_for(np.asarray(small), fields.brand_colour)
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
