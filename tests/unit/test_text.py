"""Typography: shipped fonts and coverage, fitting (checked on real renders), WCAG contrast."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ecomgen.creative.text import (
    CJK_BOLD,
    FONT_DIR,
    LATIN_BOLD,
    LATIN_REGULAR,
    NO_LINE_END,
    NO_LINE_START,
    Box,
    TextFitError,
    adjust_for_contrast,
    check_drawable,
    contrast_ratio,
    coverage,
    fit_text,
    is_large_text,
    relative_luminance,
    required_ratio,
    unsupported_characters,
    worst_contrast,
)
from ecomgen.errors import RequestError


def ink_box(layout, canvas=(1400, 1400)) -> tuple[int, int, int, int]:
    """The bounding box of the pixels the layout really draws."""
    bbox = layout.draw_mask(canvas).getbbox()
    assert bbox is not None, "nothing was drawn"
    return bbox


def assert_inside(layout, box: Box) -> None:
    x0, y0, x1, y1 = ink_box(layout)
    assert box.x0 <= x0 and box.y0 <= y0 and x1 <= box.x1 and y1 <= box.y1, (
        layout.lines,
        (x0, y0, x1, y1),
        box,
    )


def test_fonts_are_shipped_with_licences() -> None:
    for f in (LATIN_REGULAR, LATIN_BOLD, CJK_BOLD):
        assert f.is_file() and f.parent == FONT_DIR
    assert (FONT_DIR / "LICENSE-DejaVu.txt").is_file()
    assert (FONT_DIR / "LICENSE-OFL-NotoSansCJK.txt").is_file()
    total = sum(p.stat().st_size for p in FONT_DIR.iterdir() if p.suffix in (".ttf", ".otf"))
    assert total < 6.5e6


def test_coverage_latin_greek_cyrillic_cjk() -> None:
    latin, cjk = coverage(LATIN_BOLD), coverage(CJK_BOLD)
    for ch in "AzÉßøœ€£¥₹ΩЖ":
        assert ord(ch) in latin, ch
    for ch in "夏连衣裙連衣裙アイうえ한국어「」。":
        assert ord(ch) in cjk, ch
    assert unsupported_characters("Summer dress — €49 夏季新品 セール 여름 세일 Привет") == []


@pytest.mark.parametrize(
    "text, bad",
    [
        ("Sale 🔥", "\U0001f525"),  # emoji: no font has it
        ("تخفيض", "ت"),  # Arabic: needs shaping and bidi
        ("zero\u200bwidth", "\u200b"),  # format character
        ("bidi\u202espoof", "\u202e"),
        ("q\u0301", "\u0301"),  # a combining mark that NFC cannot compose
        ("龘", "龘"),  # a rare ideograph outside the documented CJK subset
    ],
)
def test_undrawable_characters_are_named(text: str, bad: str) -> None:
    assert bad in unsupported_characters(text)
    with pytest.raises(RequestError) as e:
        check_drawable("title", text)
    msg = str(e.value)
    assert msg.startswith("title:") and f"U+{ord(bad):04X}" in msg


BOXES = [Box(40, 60, 540, 260), Box(100, 100, 400, 700), Box(10, 10, 1010, 130)]
TEXTS = [
    "Run",
    "Linen summer dress, relaxed fit",
    "Classic leather watch with a steel strap and sapphire glass, made to last",
    "W" * 70,
    "Supercalifragilisticexpialidocious trainers",
    "夏季新品「连衣裙」限时优惠，全场包邮，立即抢购！",
    "軽量スニーカー、毎日の通勤に。（送料無料）",
    "여름 신상 원피스 특가 세일",
    "Nike Air 夏季限定 -20%",
    "Ǻngström jeans, jagged glyphs: gjpqy",
]


@pytest.mark.parametrize("box", BOXES)
@pytest.mark.parametrize("text", TEXTS)
@pytest.mark.parametrize("align", ["left", "center", "right"])
def test_fitted_text_never_leaves_its_box(text: str, box: Box, align: str) -> None:
    """Every text here fits these boxes at 12 px, so a TextFitError is a failure, not a skip (refusing
    what does not fit is test_too_long_raises_naming_the_field)."""
    layout = fit_text(text, box, max_size=90, min_size=12, align=align)  # type: ignore[arg-type]
    assert_inside(layout, box)
    assert layout.ink.x0 >= box.x0 and layout.ink.x1 <= box.x1
    # Every character survives the wrapping (only spaces and added hyphens differ).
    assert "".join(layout.lines).replace("-", "").replace(" ", "") == text.replace("-", "").replace(" ", "")


def test_short_text_gets_the_largest_size_and_long_text_shrinks() -> None:
    box = Box(0, 0, 600, 200)
    short = fit_text("Run", box, max_size=80, min_size=12)
    long = fit_text(TEXTS[2], box, max_size=80, min_size=12)
    assert short.size == 80 and long.size < 50


def test_words_stay_whole_when_they_can_and_break_only_as_a_last_resort() -> None:
    layout = fit_text("Linen summer dress", Box(0, 0, 300, 400), max_size=60, min_size=20)
    assert set(" ".join(layout.lines).split()) == {"Linen", "summer", "dress"}
    long = fit_text("W" * 40, Box(0, 0, 300, 400), max_size=60, min_size=20)
    assert len(long.lines) > 1 and all(line.endswith("-") for line in long.lines[:-1])
    sku = fit_text(
        "SKU-0000000000000000000000001", Box(0, 0, 150, 200), max_size=30, min_size=12, hyphenate=False
    )
    assert "".join(sku.lines) == "SKU-0000000000000000000000001"


def test_cjk_breaks_between_characters_with_kinsoku() -> None:
    text = TEXTS[5] * 2
    layout = fit_text(text, Box(0, 0, 420, 900), max_size=60, min_size=30)
    assert len(layout.lines) > 2
    for line in layout.lines:
        assert line[0] not in NO_LINE_START, layout.lines
        assert line[-1] not in NO_LINE_END, layout.lines


def test_no_orphaned_last_word() -> None:
    layout = fit_text("Linen summer dress, relaxed fit", Box(0, 0, 968, 160), max_size=60, min_size=30)
    assert len(layout.lines) == 2 and layout.lines[-1] != "fit"


def test_too_long_raises_naming_the_field() -> None:
    with pytest.raises(TextFitError, match=r"^badge: too long"):
        fit_text("W" * 60, Box(0, 0, 100, 30), max_size=20, min_size=14, max_lines=1, field="badge")


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    words=st.lists(
        st.text(
            alphabet="abcdefghijklmnopqrstuvwxyzWMQ0123456789夏季新品连衣裙優惠アイ한국,.!",
            min_size=1,
            max_size=14,
        ),
        min_size=1,
        max_size=10,
    ),
    w=st.integers(180, 900),
    h=st.integers(90, 500),
)
def test_property_ink_inside_box(words: list[str], w: int, h: int) -> None:
    box = Box(20, 30, 20 + w, 30 + h)
    try:
        layout = fit_text(" ".join(words), box, max_size=72, min_size=14)
    except TextFitError:
        return
    assert_inside(layout, box)


# ------------------------------------------------------------------------------------------- contrast


def test_wcag_reference_values() -> None:
    assert relative_luminance((255, 255, 255)) == pytest.approx(1.0)
    assert relative_luminance((0, 0, 0)) == pytest.approx(0.0)
    assert float(contrast_ratio((0, 0, 0), (255, 255, 255))) == pytest.approx(21.0)
    assert float(contrast_ratio((0x77, 0x77, 0x77), (255, 255, 255))) == pytest.approx(4.48, abs=0.01)
    assert float(contrast_ratio((0x76, 0x76, 0x76), (255, 255, 255))) >= 4.5  # the usual "darkest grey" pair


def test_large_text_thresholds() -> None:
    assert required_ratio(16, bold=False) == 4.5
    assert required_ratio(24, bold=False) == 3.0  # 18 pt
    assert required_ratio(19, bold=True) == 3.0  # 14 pt bold = 18.67 px
    assert required_ratio(18, bold=True) == 4.5
    assert is_large_text(40, bold=False)


@pytest.mark.parametrize(
    "fg, bg",
    [
        ((255, 255, 0), (255, 255, 255)),  # yellow on white
        ((120, 120, 255), (20, 20, 60)),  # periwinkle on navy
        ((255, 255, 255), (200, 200, 200)),  # white on light grey
        ((0, 0, 0), (60, 60, 60)),  # black on dark grey
        ((220, 40, 40), (230, 120, 120)),  # red on pink
    ],
)
def test_adjusted_colour_reaches_aa(fg, bg) -> None:
    rng = np.random.default_rng(0)
    px = np.clip(np.array(bg)[None, :] + rng.normal(0, 6, (500, 3)), 0, 255)
    for ratio in (3.0, 4.5):
        colour, ok = adjust_for_contrast(fg, px, ratio)
        assert ok and worst_contrast(colour, px) >= ratio


def test_adjust_reports_impossible_backgrounds() -> None:
    px = np.array([[0, 0, 0]] * 50 + [[255, 255, 255]] * 50, dtype=float)
    _, ok = adjust_for_contrast((128, 0, 0), px, 4.5)
    assert not ok


def test_shipped_coverage_file_matches_the_fonts() -> None:
    """fonts/coverage.json (read at serving time, no fontTools there) is the fonts' real cmap."""
    from fontTools.ttLib import TTFont

    for f in (LATIN_REGULAR, LATIN_BOLD, CJK_BOLD):
        with TTFont(f, lazy=True) as font:
            assert coverage(f) == frozenset(font.getBestCmap()), f.name
