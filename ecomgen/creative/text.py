"""Typography for rendered outputs: the shipped fonts, coverage, fitting text into boxes, WCAG contrast.

Torch-free (Pillow, numpy, fontTools). Fonts come only from ``fonts/`` next to this file, never from
a system lookup, so a creative renders the same on every host. Pillow's basic layout engine is used
on purpose (no libraqm): it is the same everywhere, and it is enough for Latin, Greek, Cyrillic and
CJK. Scripts that need shaping or bidi (Arabic, Hebrew, Indic, combining marks) are rejected by
:func:`check_drawable` instead of being drawn wrong.

Fitting: :func:`fit_text` wraps (Latin at spaces and after hyphens; CJK between any two characters,
with kinsoku: no closing punctuation at a line start, no opening one at a line end) and shrinks until
the text's ink lies inside its box. Words are broken (with a hyphen) only when no size fits without.
"""

from __future__ import annotations

import colorsys
import json
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ecomgen.errors import RequestError

FONT_DIR = Path(__file__).resolve().parent / "fonts"
LATIN_REGULAR = FONT_DIR / "DejaVuSans-Subset.ttf"
LATIN_BOLD = FONT_DIR / "DejaVuSans-Bold-Subset.ttf"
CJK_BOLD = FONT_DIR / "NotoSansCJKsc-Bold-Subset.otf"  # the only CJK weight shipped (size budget)

Weight = Literal["regular", "bold"]
Align = Literal["left", "center", "right"]
VAlign = Literal["top", "middle", "bottom"]
RGB = tuple[int, int, int]

# Fallback order per weight: the first face that can draw a character draws it. (Plain strings as
# keys: the layout code looks faces up hundreds of thousands of times per creative.)
STACKS: dict[str, tuple[str, ...]] = {
    "regular": (str(LATIN_REGULAR), str(CJK_BOLD)),
    "bold": (str(LATIN_BOLD), str(CJK_BOLD)),
}

# Kinsoku shori (JIS X 4051, simplified): these may not start a line ...
NO_LINE_START = set(
    "、。，．,.:;?!・：；？！ー～…‥」』）］｝〕〉》】〙〗’”｣)]}%％ぁぃぅぇぉっゃゅょゎゕゖァィゥェォッャュョヮヵヶ々〻"
)
# ... and these may not end one.
NO_LINE_END = set("「『（［｛〔〈《【〘〖‘“｢([{")


class TextFitError(RequestError):
    """The text cannot be fitted into its box even at the smallest allowed size."""


COVERAGE_FILE = FONT_DIR / "coverage.json"  # written by build_fonts.py next to the fonts it builds


@cache
def coverage(path: Path | str) -> frozenset[int]:
    """Code points the font file maps to a glyph (its best Unicode cmap).

    Read from ``fonts/coverage.json`` (ranges per file, generated with the fonts), so serving needs no
    fontTools; a font missing from it is read with fontTools.
    """
    name = Path(path).name
    if COVERAGE_FILE.is_file():
        ranges = json.loads(COVERAGE_FILE.read_text()).get(name)
        if ranges is not None:
            return frozenset(c for a, b in ranges for c in range(a, b + 1))
    from fontTools.ttLib import TTFont

    with TTFont(path, lazy=True) as f:
        return frozenset(f.getBestCmap())


@lru_cache(maxsize=512)
def font(path: Path | str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)


def is_cjk(ch: str) -> bool:
    """Characters that may break a line on either side (ideographs, kana, Hangul, CJK punctuation)."""
    o = ord(ch)
    return (
        0x2E80 <= o <= 0x9FFF  # radicals, CJK symbols/punctuation, kana, Hangul jamo, CJK ideographs
        or 0xAC00 <= o <= 0xD7AF  # Hangul syllables
        or 0xF900 <= o <= 0xFAFF  # CJK compatibility ideographs
        or 0xFF00 <= o <= 0xFFEF  # half/fullwidth forms
        or 0x20000 <= o <= 0x3FFFF
    )


def _needs_shaping(ch: str) -> bool:
    # Right-to-left scripts need bidi, marks need positioning: the basic layout can do neither.
    return unicodedata.bidirectional(ch) in ("R", "AL", "AN") or unicodedata.category(ch) in (
        "Mn",
        "Mc",
        "Me",
    )


def _describe(ch: str) -> str:
    name = unicodedata.name(ch, "unnamed")
    return f"{ch!r} (U+{ord(ch):04X} {name})"


def unsupported_characters(text: str, weight: Weight = "bold") -> list[str]:
    """Characters of ``text`` (after NFC) that the shipped fonts cannot draw correctly, in order."""
    stack = STACKS[weight]
    bad: list[str] = []
    for ch in unicodedata.normalize("NFC", text):
        cat = unicodedata.category(ch)
        drawable = (
            not cat.startswith("C")  # controls, format (bidi overrides, zero-width), private use, unassigned
            and cat not in ("Zl", "Zp")
            and (ch == " " or not cat.startswith("Z") or ch == "\u00a0")
            and not _needs_shaping(ch)
            and any(ord(ch) in coverage(p) for p in stack)
        )
        if not drawable and ch not in bad:
            bad.append(ch)
    return bad


def check_drawable(field: str, text: str, weight: Weight = "bold") -> None:
    """Raise :class:`RequestError` naming the field and the first character(s) that cannot be drawn."""
    bad = unsupported_characters(text, weight)
    if bad:
        shown = ", ".join(_describe(c) for c in bad[:3]) + (
            f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        )
        raise RequestError(f"{field}: the shipped fonts cannot draw {shown}")


# --------------------------------------------------------------------------------------------- runs


def _face_for_string(text: str, stack: Sequence[str]) -> str | None:
    """The CJK face for the whole string when it has CJK and that face covers it all (one design)."""
    cjk_face = stack[-1]
    if any(is_cjk(c) for c in text) and all(ord(c) in coverage(cjk_face) for c in text):
        return cjk_face
    return None


@lru_cache(maxsize=1 << 15)
def runs(text: str, weight: Weight = "bold") -> tuple[tuple[str, str], ...]:
    """Split ``text`` into (substring, font file) runs; a space joins the run before it."""
    stack = STACKS[weight]
    if not text:
        return ()
    if all(ord(c) in coverage(stack[0]) for c in text):
        return ((text, stack[0]),)
    whole = _face_for_string(text, stack)
    if whole is not None:
        return ((text, whole),)
    out: list[tuple[str, str]] = []
    for ch in text:
        face = next((p for p in stack if ord(ch) in coverage(p)), stack[0])
        if out and (out[-1][1] == face or ch == " "):
            out[-1] = (out[-1][0] + ch, out[-1][1])
        else:
            out.append((ch, face))
    return tuple(out)


@dataclass(frozen=True)
class LineMetrics:
    advance: float  # pen advance of the line, trailing space excluded
    left: int  # ink box relative to the pen origin on the baseline (Pillow's getbbox, anchor "ls")
    top: int
    right: int
    bottom: int


@lru_cache(maxsize=1 << 16)
def measure(text: str, size: int, weight: Weight = "bold") -> LineMetrics:
    x = 0.0
    left, top, right, bottom = 0, 0, 0, 0
    first = True
    for s, face in runs(text, weight):
        f = font(face, size)
        bl, bt, br, bb = (int(v) for v in f.getbbox(s, anchor="ls"))
        if first:
            left, top, right, bottom = int(x) + bl, bt, int(np.ceil(x)) + br, bb
            first = False
        else:
            left = min(left, int(x) + bl)
            top, bottom = min(top, bt), max(bottom, bb)
            right = max(right, int(np.ceil(x)) + br)
        x += f.getlength(s)
    return LineMetrics(x, left, top, right, bottom)


def width(text: str, size: int, weight: Weight = "bold") -> int:
    """Horizontal extent of the line's ink and advance (what must fit in a box's width)."""
    m = measure(text, size, weight)
    return max(m.right, int(np.ceil(m.advance))) - min(0, m.left)


# ------------------------------------------------------------------------------------------- wrapping


def _breaks_anywhere(ch: str) -> bool:
    """Han, kana and CJK punctuation break between any two characters; Hangul breaks at spaces."""
    o = ord(ch)
    hangul = 0xAC00 <= o <= 0xD7AF or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F
    return is_cjk(ch) and not hangul


@lru_cache(maxsize=4096)
def _tokens(text: str) -> tuple[str, ...]:
    """Units that must stay on one line: words (with their trailing space) and single CJK characters.

    Kinsoku: a no-line-start character is glued to the unit before it, a no-line-end one to the unit
    after it. A hyphen inside a word is a break opportunity when both sides have 3+ characters.
    """
    atoms: list[str] = []
    for ch in text:
        if ch == " ":
            if atoms:
                atoms[-1] += " "
            continue
        prev = atoms[-1] if atoms else ""
        if (
            _breaks_anywhere(ch)
            or not prev
            or prev.endswith(" ")
            or _breaks_anywhere(prev[-1])
            or (prev.endswith("-") and len(prev.rstrip("-")) >= 3 and ch.isalnum())
        ):
            atoms.append(ch)
        else:
            atoms[-1] += ch
    out: list[str] = []
    glue_next = False
    for a in atoms:
        if out and (glue_next or a[0] in NO_LINE_START):
            out[-1] += a
        else:
            out.append(a)
        glue_next = not a.endswith(" ") and a[-1] in NO_LINE_END
    return tuple(out)


def _break_word(word: str, max_w: int, size: int, weight: Weight, hyphenate: bool = True) -> list[str]:
    """Split one over-long word into pieces that fit, with a hyphen after Latin letters (if asked)."""
    pieces: list[str] = []
    rest = word
    while rest:
        n = len(rest)
        if width(rest, size, weight) <= max_w:
            pieces.append(rest)
            break
        lo, hi = 1, n - 1
        best = 1
        while lo <= hi:  # the longest prefix that fits with its hyphen
            mid = (lo + hi) // 2
            head = rest[:mid]
            mark = (
                "-"
                if hyphenate and head[-1].isalpha() and rest[mid].isalpha() and not is_cjk(head[-1])
                else ""
            )
            if width(head + mark, size, weight) <= max_w:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        head = rest[:best]
        mark = (
            "-" if hyphenate and head[-1].isalpha() and rest[best].isalpha() and not is_cjk(head[-1]) else ""
        )
        if width(head + mark, size, weight) > max_w:
            return []  # not even one character fits
        pieces.append(head + mark)
        rest = rest[best:]
    return pieces


def wrap(
    text: str,
    max_w: int,
    size: int,
    weight: Weight = "bold",
    break_words: bool = False,
    hyphenate: bool = True,
) -> list[str] | None:
    """Greedy line filling; None when a unit is wider than ``max_w`` and ``break_words`` is off."""
    lines: list[str] = []
    cur = ""
    for tok in _tokens(text):
        cand = cur + tok
        if width(cand.rstrip(" "), size, weight) <= max_w:
            cur = cand
            continue
        if cur.strip():
            lines.append(cur.rstrip(" "))
            cur = ""
        if width(tok.rstrip(" "), size, weight) <= max_w:
            cur = tok
            continue
        if not break_words:
            return None
        pieces = _break_word(tok.rstrip(" "), max_w, size, weight, hyphenate)
        if not pieces:
            return None
        lines.extend(pieces[:-1])
        cur = pieces[-1] + (" " if tok.endswith(" ") else "")
    if cur.strip():
        lines.append(cur.rstrip(" "))
    return lines


# -------------------------------------------------------------------------------------------- fitting


@dataclass(frozen=True)
class Box:
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def w(self) -> int:
        return self.x1 - self.x0

    @property
    def h(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class TextLayout:
    """Lines placed in a box: ``origins`` are the pen positions (left end of each line's baseline)."""

    lines: tuple[str, ...]
    size: int
    weight: Weight
    origins: tuple[tuple[int, int], ...]
    ink: Box  # the union of the lines' ink boxes (Pillow's getbbox: a superset of the drawn pixels)
    box: Box

    def draw_mask(self, canvas_size: tuple[int, int], region: Box | None = None) -> Image.Image:
        """The text as an 8-bit coverage mask the size of the canvas (W, H), or of ``region`` only
        (canvas coordinates; much cheaper for a small text on a big canvas)."""
        ox0, oy0 = (region.x0, region.y0) if region else (0, 0)
        mask = Image.new("L", (region.w, region.h) if region else canvas_size, 0)
        d = ImageDraw.Draw(mask)
        for line, (ox, oy) in zip(self.lines, self.origins, strict=True):
            x = float(ox - ox0)
            for s, face in runs(line, self.weight):
                f = font(face, self.size)
                d.text((x, oy - oy0), s, font=f, fill=255, anchor="ls")
                x += f.getlength(s)
        return mask


def line_height(size: int, text: str) -> int:
    # CJK faces need more air between lines than Latin headlines.
    return round(size * (1.32 if any(is_cjk(c) for c in text) else 1.16))


def _place(
    lines: list[str], size: int, weight: Weight, box: Box, align: Align, valign: VAlign
) -> TextLayout | None:
    lh = line_height(size, "".join(lines))
    ms = [measure(line, size, weight) for line in lines]
    # Vertical extent of the block relative to the first baseline (y = 0): the fonts' ascent and descent,
    # or the ink where it reaches further, so the block height does not depend on which letters it has.
    faces = {face for line in lines for _, face in runs(line, weight)}
    ascent = max(font(f, size).getmetrics()[0] for f in faces)
    descent = max(font(f, size).getmetrics()[1] for f in faces)
    top = min(min(m.top for m in ms), -ascent)
    bottom = max(max(i * lh + m.bottom for i, m in enumerate(ms)), (len(lines) - 1) * lh + descent)
    if bottom - top > box.h:
        return None
    if valign == "top":
        base0 = box.y0 - top
    elif valign == "bottom":
        base0 = box.y1 - bottom
    else:
        base0 = box.y0 + (box.h - (bottom - top)) // 2 - top
    origins = []
    x0s, x1s = [], []
    for i, m in enumerate(ms):
        lo, hi = min(0, m.left), max(m.right, int(np.ceil(m.advance)))
        if hi - lo > box.w:
            return None
        if align == "left":
            ox = box.x0 - lo
        elif align == "right":
            ox = box.x1 - hi
        else:
            ox = box.x0 + (box.w - (hi - lo)) // 2 - lo
        origins.append((ox, base0 + i * lh))
        x0s.append(ox + m.left)
        x1s.append(ox + m.right)
    ink = Box(min(x0s), base0 + top, max(x1s), base0 + bottom)
    return TextLayout(tuple(lines), size, weight, tuple(origins), ink, box)


def _balanced(
    text: str, layout: TextLayout, weight: Weight, align: Align, valign: VAlign, break_words: bool
) -> TextLayout | None:
    """The same number of lines with the most even widths (no orphaned last word).

    Dynamic programming over the wrap units: minimise the sum of squared differences to the widest
    line, subject to every line fitting the box. Widths are summed per unit (kerning across a unit
    boundary is ignored), so the result is placed, i.e. measured for real, before it is returned.
    """
    if break_words:
        return None
    n, box, size = len(layout.lines), layout.box, layout.size
    toks = _tokens(text)
    t = len(toks)
    if t <= n:
        return None
    adv = [measure(tok, size, weight).advance for tok in toks]
    tight = [measure(tok.rstrip(" "), size, weight).advance for tok in toks]
    pre = np.concatenate([[0.0], np.cumsum(adv)])

    def line_w(i: int, j: int) -> float:  # tokens i..j-1 on one line
        return float(pre[j - 1] - pre[i] + tight[j - 1])

    def lines_needed(cap: float) -> int:  # greedy: the fewest lines with every line <= cap
        count, i = 0, 0
        while i < t:
            j = i + 1
            if line_w(i, j) > cap:
                return t + 1
            while j < t and line_w(i, j + 1) <= cap:
                j += 1
            count, i = count + 1, j
        return count

    # The narrowest block width that still allows n lines (binary search; n lines are possible at a
    # width iff the greedy fill needs at most n), then the most even split under that width.
    cands = sorted({line_w(i, j) for i in range(t) for j in range(i + 1, t + 1) if line_w(i, j) <= box.w})
    lo, hi = 0, len(cands) - 1
    if not cands or lines_needed(cands[hi]) > n:
        return None
    while lo < hi:
        mid = (lo + hi) // 2
        if lines_needed(cands[mid]) <= n:
            hi = mid
        else:
            lo = mid + 1
    cap = cands[lo]
    inf = float("inf")
    cost = [[inf] * (t + 1) for _ in range(n + 1)]
    back = [[0] * (t + 1) for _ in range(n + 1)]
    cost[0][0] = 0.0
    for k in range(1, n + 1):
        for j in range(1, t + 1):
            for i in range(k - 1, j):
                if cost[k - 1][i] == inf:
                    continue
                w = line_w(i, j)
                if w > cap:
                    continue
                c = cost[k - 1][i] + (cap - w) ** 2
                if c < cost[k][j]:
                    cost[k][j], back[k][j] = c, i
    best: tuple[float, list[int]] | None = None
    if cost[n][t] < inf:
        cuts, j = [], t
        for k in range(n, 0, -1):
            cuts.append(j)
            j = back[k][j]
        best = (cost[n][t], cuts[::-1])
    if best is None:
        return None
    lines, i = [], 0
    for j in best[1]:
        lines.append("".join(toks[i:j]).rstrip(" "))
        i = j
    return _place(lines, size, weight, box, align, valign)


def fit_text(
    text: str,
    box: Box,
    *,
    max_size: int,
    min_size: int,
    weight: Weight = "bold",
    max_lines: int | None = None,
    align: Align = "left",
    valign: VAlign = "top",
    field: str = "text",
    balance: bool = True,
    hyphenate: bool = True,
) -> TextLayout:
    """The largest size in [min_size, max_size] at which ``text`` wraps into ``box`` without clipping.

    Words are kept whole if any size allows it; otherwise the largest size with broken words wins.
    With ``balance`` the lines are then re-wrapped to the narrowest width that keeps their number, so
    a headline does not end in one orphaned word. Raises :class:`TextFitError` (a RequestError naming
    ``field``) when nothing fits. ``hyphenate=False`` breaks words without adding a hyphen (codes,
    SKUs: a hyphen there would change what is read).
    """
    text = " ".join(unicodedata.normalize("NFC", text).split())
    if not text:
        raise TextFitError(f"{field}: empty")

    def attempt(size: int, break_words: bool) -> TextLayout | None:
        lines = wrap(text, box.w, size, weight, break_words, hyphenate)
        if not lines or (max_lines is not None and len(lines) > max_lines):
            return None
        return _place(lines, size, weight, box, align, valign)

    for break_words in (False, True):
        # Fit is monotone in size to a very good approximation: binary search, then step down to be sure.
        lo, hi, best = min_size, max_size, None
        while lo <= hi:
            mid = (lo + hi) // 2
            if attempt(mid, break_words) is not None:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        if best is None:
            best = min_size - 1
            for s in range(max_size, min_size - 1, -1):
                if attempt(s, break_words) is not None:
                    best = s
                    break
        if best >= min_size:
            layout = attempt(best, break_words)
            assert layout is not None
            if balance and len(layout.lines) > 1:
                # A balanced wrap may need a pixel more height; a size or two smaller is still better
                # than an orphaned last word.
                for s in range(best, max(min_size, best - 3) - 1, -1):
                    greedy = attempt(s, break_words)
                    balanced = _balanced(text, greedy, weight, align, valign, break_words) if greedy else None
                    if balanced is not None:
                        return balanced
            return layout
    raise TextFitError(
        f"{field}: too long to fit its {box.w}x{box.h} px box at {min_size} px or more"
        + (f" in {max_lines} line(s)" if max_lines else "")
    )


# ------------------------------------------------------------------------------------------- contrast


def relative_luminance(rgb: Sequence[float] | np.ndarray) -> np.ndarray:
    """WCAG 2.x relative luminance of sRGB colour(s) in 0..255 (last axis = RGB)."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    return lin @ np.array([0.2126, 0.7152, 0.0722])


def contrast_ratio(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> np.ndarray:
    la, lb = relative_luminance(a), relative_luminance(b)
    return (np.maximum(la, lb) + 0.05) / (np.minimum(la, lb) + 0.05)


def is_large_text(size_px: float, bold: bool) -> bool:
    """WCAG "large scale": at least 18 pt, or 14 pt bold (1 pt = 4/3 CSS px)."""
    return size_px >= 24.0 or (bold and size_px >= 14 * 4 / 3)


def required_ratio(size_px: float, bold: bool) -> float:
    """WCAG 2.x AA minimum (success criterion 1.4.3): 4.5:1, or 3:1 for large text."""
    return 3.0 if is_large_text(size_px, bold) else 4.5


def passes_aa(fg: Sequence[float], bg: Sequence[float], size_px: float, bold: bool) -> bool:
    return bool(contrast_ratio(fg, bg) >= required_ratio(size_px, bold))


def worst_contrast(fg: Sequence[float], bg_pixels: np.ndarray, percentile: float = 1.0) -> float:
    """Contrast of ``fg`` against the background pixels behind a text (Nx3), at a low percentile.

    The 1st percentile, not the minimum, so that a few stray pixels (JPEG ringing in a photo) do not
    decide; 99% of the pixels behind the glyphs meet the returned ratio.
    """
    px = np.asarray(bg_pixels, dtype=np.float64).reshape(-1, 3)
    if px.size == 0:
        return float("inf")
    return float(np.percentile(contrast_ratio(np.asarray(fg, dtype=np.float64)[None, :], px), percentile))


def _with_lightness(rgb: RGB, lightness: float) -> RGB:
    h, _, s = colorsys.rgb_to_hls(*(c / 255.0 for c in rgb))
    r, g, b = colorsys.hls_to_rgb(h, min(max(lightness, 0.0), 1.0), s)
    return (round(r * 255), round(g * 255), round(b * 255))


def adjust_for_contrast(fg: RGB, bg_pixels: np.ndarray, min_ratio: float) -> tuple[RGB, bool]:
    """The colour closest in lightness to ``fg`` (same hue and saturation) that reaches ``min_ratio``
    against the background pixels; ``(colour, True)`` on success. When no lightness can (a background
    with both very dark and very light pixels), returns the better of black and white and False: the
    caller must then put a plate or scrim behind the text.
    """
    if worst_contrast(fg, bg_pixels) >= min_ratio:
        return fg, True
    _, l0, _ = colorsys.rgb_to_hls(*(c / 255.0 for c in fg))
    candidates: list[tuple[float, RGB]] = []
    for direction in (1, -1):
        lo, hi = (l0, 1.0) if direction == 1 else (0.0, l0)
        end = _with_lightness(fg, hi if direction == 1 else lo)
        if worst_contrast(end, bg_pixels) < min_ratio:
            continue
        for _ in range(24):  # bisect on lightness: contrast is monotone along one direction
            mid = (lo + hi) / 2
            ok = worst_contrast(_with_lightness(fg, mid), bg_pixels) >= min_ratio
            if direction == 1:
                lo, hi = (lo, mid) if ok else (mid, hi)
            else:
                lo, hi = (mid, hi) if ok else (lo, mid)
        lightness = hi if direction == 1 else lo
        c = _with_lightness(fg, lightness)
        if worst_contrast(c, bg_pixels) >= min_ratio:
            candidates.append((abs(lightness - l0), c))
    if candidates:
        return min(candidates)[1], True
    white, black = (255, 255, 255), (0, 0, 0)
    best = max((white, black), key=lambda c: worst_contrast(c, bg_pixels))
    return best, False
