"""Inventory images: the stock-state logic, a state overlay on one product, and a contact sheet of SKUs.

Torch-free (numpy + Pillow). States and how they look:

- ``in_stock``: a small green "In stock" pill, bottom left: the photo stays the hero.
- ``low_stock``: an amber "Only 3 left" banner across the top, and an amber frame.
- ``sold_out``: the photo desaturated and faded, a dark "Sold out" band across the middle.
- ``back_order``: a blue "Back on 12 Dec" band along the bottom; the photo slightly muted.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance

from ecomgen.creative.drawing import INK, WHITE, draw_text, mix, paste_shape, rounded_mask, shadow, text_on
from ecomgen.creative.text import RGB, Box, check_drawable, fit_text
from ecomgen.errors import RequestError
from ecomgen_client.contracts import INVENTORY_MAX_SIDE, MAX_SKUS

StateKind = Literal["in_stock", "low_stock", "sold_out", "back_order"]
DEFAULT_LOW_STOCK_THRESHOLD = 5  # used when a request gives none: "Only N left" at 5 or fewer
SKU_MAX_CHARS = 32
MIN_SIDE = 480  # outputs are at least this on the short side, so the labels are crisp
MAX_SIDE = INVENTORY_MAX_SIDE  # and at most this on the long side

COLOURS: dict[str, RGB] = {  # the state colours (sheet legend, frames, pills)
    "in_stock": (27, 127, 59),
    "low_stock": (245, 166, 35),
    "sold_out": (58, 58, 64),
    "back_order": (31, 95, 204),
}
TITLES = {
    "in_stock": "In stock",
    "low_stock": "Low stock",
    "sold_out": "Sold out",
    "back_order": "Back-order",
}


@dataclass(frozen=True)
class State:
    kind: StateKind
    stock: int
    label: str  # what the overlay says: "In stock", "Only 3 left", "Sold out", "Back on 12 Dec"
    restock: date | None = None


def _restock_label(d: date, today: date) -> str:
    if d == today:
        return "Back today"
    day = f"{d.day} {d.strftime('%b')}"  # "12 Dec": %b is locale-dependent, but Python starts in C
    return f"Back on {day}" if d.year == today.year else f"Back on {day} {d.year}"


_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def parse_restock_date(value: str | bytes | None, today: date) -> date | None:
    if value is None or len(value) == 0:
        return None
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError("restock_date: not valid UTF-8") from e
    v = value.strip()
    if not _ISO_DATE.fullmatch(v):
        raise RequestError(f"restock_date: {value!r} is not a date; write YYYY-MM-DD, e.g. 2026-12-12")
    try:
        d = date.fromisoformat(v)
    except ValueError as e:
        raise RequestError(f"restock_date: {value!r} is not a valid date ({e})") from e
    if d < today:
        raise RequestError(f"restock_date: {v} is in the past (today is {today.isoformat()})")
    return d


def stock_state(
    stock: int,
    low_stock_threshold: int | None,
    restock_date: str | bytes | None,
    today: date,
) -> State:
    """The state for one SKU. ``low_stock_threshold`` None means :data:`DEFAULT_LOW_STOCK_THRESHOLD`;
    ``restock_date`` (YYYY-MM-DD, today or later) turns "sold out" into "back-order"."""
    if isinstance(stock, bool) or not isinstance(stock, int | np.integer):
        raise RequestError(f"stock: must be an integer, got {stock!r}")
    if stock < 0:
        raise RequestError(f"stock: must be >= 0, got {stock}")
    if low_stock_threshold is not None and (
        isinstance(low_stock_threshold, bool) or not isinstance(low_stock_threshold, int | np.integer)
    ):
        raise RequestError(f"low_stock_threshold: must be an integer, got {low_stock_threshold!r}")
    if low_stock_threshold is not None and low_stock_threshold <= 0:
        raise RequestError(f"low_stock_threshold: must be > 0, got {low_stock_threshold}")
    threshold = DEFAULT_LOW_STOCK_THRESHOLD if low_stock_threshold is None else int(low_stock_threshold)
    restock = parse_restock_date(restock_date, today)
    stock = int(stock)
    if stock == 0:
        if restock is not None:
            return State("back_order", 0, _restock_label(restock, today), restock)
        return State("sold_out", 0, "Sold out")
    if stock <= threshold:
        return State("low_stock", stock, f"Only {stock} left", restock)
    return State("in_stock", stock, "In stock", restock)


def validate_sku(sku: str | bytes, field: str = "sku") -> str:
    """A SKU label: 1..32 printable characters the shipped fonts can draw."""
    if isinstance(sku, bytes):
        try:
            sku = sku.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RequestError(f"{field}: not valid UTF-8") from e
    s = unicodedata.normalize("NFC", sku).strip()
    if not s:
        raise RequestError(f"{field}: empty")
    for ch in s:
        if unicodedata.category(ch) == "Cc":
            raise RequestError(f"{field}: control character U+{ord(ch):04X} is not allowed")
    if len(s) > SKU_MAX_CHARS:
        raise RequestError(f"{field}: too long ({len(s)} characters, at most {SKU_MAX_CHARS})")
    check_drawable(field, s)
    return s


# ------------------------------------------------------------------------------------------- drawing


def _label(
    canvas: Image.Image, text: str, box: Box, fill: RGB, size: int, field: str, align: str = "center"
) -> None:
    layout = fit_text(
        text,
        box,
        max_size=size,
        min_size=max(10, size // 2),
        max_lines=1,
        align=align,  # type: ignore[arg-type]
        valign="middle",
        field=field,
    )
    draw_text(canvas, layout, text_on(fill), field)


def _dot(canvas: Image.Image, cx: int, cy: int, r: int, colour: RGB) -> None:
    m = rounded_mask((2 * r, 2 * r), r)
    canvas.paste(Image.new("RGB", (2 * r, 2 * r), colour), (cx - r, cy - r), m)


def _fitted(product: np.ndarray) -> Image.Image:
    """At least MIN_SIDE on the short side (crisp labels), at most MAX_SIDE on the long side (a bounded
    output whatever photo was uploaded); a photo narrower than 1:2 is padded with white to 1:2, so the
    state labels have room."""
    h, w = product.shape[:2]
    if max(h, w) > 2 * min(h, w):
        ph, pw = max(h, (w + 1) // 2), max(w, (h + 1) // 2)
        canvas = np.full((ph, pw, 3), 255, np.uint8)
        y, x = (ph - h) // 2, (pw - w) // 2
        canvas[y : y + h, x : x + w] = product
        product = canvas
    img = _upscaled(product, MIN_SIDE)
    if max(img.size) > MAX_SIDE:
        s = MAX_SIDE / max(img.size)
        size = (max(1, round(img.width * s)), max(1, round(img.height * s)))
        img = img.resize(size, Image.Resampling.LANCZOS)
    return img


def _upscaled(product: np.ndarray, min_side: int) -> Image.Image:
    img = Image.fromarray(product)
    s = max(1.0, min_side / min(img.size))
    if s > 1.0:
        img = img.resize((round(img.width * s), round(img.height * s)), Image.Resampling.LANCZOS)
    return img


def _overlay(img: Image.Image, state: State) -> Image.Image:
    """Draw ``state`` on ``img`` (modified and returned)."""
    w, h = img.size
    u = min(w, h) / 480
    colour = COLOURS[state.kind]
    if state.kind == "sold_out":
        grey = ImageEnhance.Color(img).enhance(0.0)
        img = Image.blend(grey, Image.new("RGB", img.size, (255, 255, 255)), 0.35)
        band_h = round(96 * u)
        y0 = (h - band_h) // 2
        paste_shape(img, Box(0, y0, w, y0 + band_h), colour, 0, opacity=0.92)
        _label(
            img,
            state.label.upper(),
            Box(round(24 * u), y0, w - round(24 * u), y0 + band_h),
            colour,
            round(52 * u),
            "state",
        )
    elif state.kind == "back_order":
        img = ImageEnhance.Color(img).enhance(0.55)
        band_h = round(84 * u)
        paste_shape(img, Box(0, h - band_h, w, h), colour, 0, opacity=0.95)
        _label(
            img,
            state.label,
            Box(round(20 * u), h - band_h, w - round(20 * u), h),
            colour,
            round(40 * u),
            "state",
        )
    elif state.kind == "low_stock":
        t = max(4, round(10 * u))
        d = ImageDraw.Draw(img)
        for i in range(t):  # the frame
            d.rectangle((i, i, w - 1 - i, h - 1 - i), outline=colour)
        band_h = round(80 * u)
        paste_shape(img, Box(0, 0, w, band_h), colour, 0)
        _label(
            img, state.label, Box(round(20 * u), 0, w - round(20 * u), band_h), colour, round(42 * u), "state"
        )
    else:
        ph, m = round(52 * u), round(18 * u)
        size = round(26 * u)
        probe = fit_text(
            state.label, Box(0, 0, w, ph), max_size=size, min_size=size, max_lines=1, field="state"
        )
        r = round(9 * u)
        pw = probe.ink.x1 - min(0, probe.ink.x0) + 3 * r + round(44 * u)
        box = Box(m, h - m - ph, m + pw, h - m)
        # A pale tint of the state colour with a soft shadow, so the pill reads on white studio shots too.
        blur = round(6 * u)
        shadow(img, box, ph / 2, blur, offset=blur // 2, strength=0.35)
        paste_shape(img, box, mix(colour, WHITE, 0.88), ph / 2)
        _dot(img, box.x0 + round(22 * u) + r, box.y0 + ph // 2, r, colour)
        text_box = Box(box.x0 + round(22 * u) + 3 * r, box.y0, box.x1 - round(14 * u), box.y1)
        layout = fit_text(
            state.label, text_box, max_size=size, min_size=size, max_lines=1, valign="middle", field="state"
        )
        draw_text(img, layout, colour, "state")
    return img


def render_inventory(product: np.ndarray, state: State, alpha: np.ndarray | None = None) -> np.ndarray:
    """The product image with its stock-state overlay, HxWx3 uint8. Small inputs (the 256x192 close-up)
    are first enlarged with Lanczos so the short side is at least :data:`MIN_SIDE` px. ``alpha``: the
    product's matte (an uploaded photo's cut-out): it is then shown on clean white, filling 85%,
    rather than on whatever the photo was taken on."""
    if product.ndim != 3 or product.shape[2] != 3 or product.dtype != np.uint8:
        raise ValueError(f"product must be HxWx3 uint8, got {product.shape} {product.dtype}")
    if alpha is not None:
        from ecomgen.creative.studio import matte_box, white_main_image

        x0, y0, x1, y1 = matte_box(alpha)
        w, h = (x1 - x0) / 0.85, (y1 - y0) / 0.85  # a frame the product fills to 85%
        scale = min(MAX_SIDE / max(w, h), max(1.0, MIN_SIDE / min(w, h)))
        product = white_main_image(product, alpha, max(16, round(w * scale)), max(16, round(h * scale)))
    return np.asarray(_overlay(_fitted(product), state), dtype=np.uint8)


# --------------------------------------------------------------------------------------------- sheet


def render_sheet(items: Sequence[tuple[np.ndarray, str, State]], title: str | None = None) -> np.ndarray:
    """A contact sheet of up to 64 SKUs: each cell has the product, a state-coloured bar with the state,
    and the SKU label; a header carries the title, counts per state and the colour legend."""
    n = len(items)
    if not 1 <= n <= MAX_SKUS:
        raise RequestError(f"items: need 1..{MAX_SKUS} SKUs, got {n}")
    cols = min(8, max(1, math.ceil(math.sqrt(n))))
    if n > 1:
        cols = max(cols, min(n, 4))  # at least a row of 4 when there are that many
    rows = math.ceil(n / cols)
    cell_w, img_h, label_h, bar_h, gap, margin = 216, 288, 58, 36, 18, 36
    cell_h = img_h + bar_h + label_h
    grid_w = cols * cell_w + (cols - 1) * gap
    width = max(grid_w + 2 * margin, 960)
    header_h = 150
    height = header_h + rows * cell_h + (rows - 1) * gap + margin
    sheet = Image.new("RGB", (width, height), (246, 247, 249))
    _header(sheet, items, title, Box(margin, 0, width - margin, header_h))
    x_start = (width - grid_w) // 2
    for i, (product, sku, state) in enumerate(items):
        r, c = divmod(i, cols)
        x, y = x_start + c * (cell_w + gap), header_h + r * (cell_h + gap)
        _cell(sheet, product, sku, state, Box(x, y, x + cell_w, y + cell_h), img_h, bar_h, i)
    return np.asarray(sheet, dtype=np.uint8)


def _header(
    sheet: Image.Image, items: Sequence[tuple[np.ndarray, str, State]], title: str | None, box: Box
) -> None:
    heading = title or f"Inventory: {len(items)} SKU{'s' if len(items) != 1 else ''}"
    check_drawable("title", heading)
    t = fit_text(
        heading,
        Box(box.x0, box.y0 + 22, box.x1, box.y0 + 72),
        max_size=40,
        min_size=20,
        max_lines=1,
        field="title",
    )
    draw_text(sheet, t, INK, "title")
    # Legend: a swatch, the state name and its count, for all four states (zero counts too: the
    # legend must read the same on every sheet).
    counts = {k: sum(1 for _, _, s in items if s.kind == k) for k in COLOURS}
    x, y0, y1 = box.x0, box.y0 + 86, box.y0 + 126
    for kind, colour in COLOURS.items():
        entry = f"{TITLES[kind]}  {counts[kind]}"
        lay = fit_text(
            entry,
            Box(x + 40, y0, box.x1, y1),
            max_size=24,
            min_size=24,
            max_lines=1,
            valign="middle",
            field="legend",
            weight="regular",
        )
        paste_shape(sheet, Box(x, y0 + 6, x + 28, y1 - 6), colour, 6)
        draw_text(sheet, lay, INK, "legend")
        x = lay.ink.x1 + 44


def _cell(
    sheet: Image.Image,
    product: np.ndarray,
    sku: str,
    state: State,
    box: Box,
    img_h: int,
    bar_h: int,
    index: int,
) -> None:
    colour = COLOURS[state.kind]
    paste_shape(sheet, box, WHITE, 10)
    # The product, contain-fitted in the image area, with the state's treatment (sold out is grey).
    img = Image.fromarray(product)
    s = min((box.w - 16) / img.width, (img_h - 16) / img.height)
    pw, ph = max(1, round(img.width * s)), max(1, round(img.height * s))
    pim = img.resize((pw, ph), Image.Resampling.LANCZOS)
    if state.kind == "sold_out":
        pim = Image.blend(ImageEnhance.Color(pim).enhance(0.0), Image.new("RGB", pim.size, WHITE), 0.35)
    elif state.kind == "back_order":
        pim = ImageEnhance.Color(pim).enhance(0.55)
    sheet.paste(pim, (box.x0 + (box.w - pw) // 2, box.y0 + 8 + (img_h - 16 - ph) // 2))
    bar = Box(box.x0, box.y0 + img_h, box.x1, box.y0 + img_h + bar_h)
    paste_shape(sheet, bar, colour, 0)
    _label(
        sheet, state.label, Box(bar.x0 + 10, bar.y0, bar.x1 - 10, bar.y1), colour, 22, f"items[{index}].state"
    )
    lab = Box(box.x0 + 10, bar.y1 + 4, box.x1 - 10, box.y1 - 4)
    layout = fit_text(
        sku,
        lab,
        max_size=22,
        min_size=13,
        max_lines=3,
        align="center",
        valign="middle",
        field=f"items[{index}].sku",
        hyphenate=False,
    )
    draw_text(sheet, layout, INK, f"items[{index}].sku")
