"""Ad creatives: field validation (each error names its field), price formats, and real renders."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecomgen.creative.ads import (
    FORMATS,
    TEMPLATES,
    AdFields,
    TextPlacement,
    parse_price,
    render_ad,
    validate_ad_fields,
)
from ecomgen.errors import RequestError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOOD = dict(title="Linen summer dress", price="49.90", currency="EUR", badge="NEW", cta="Shop now")


def product(name: str = "1547.jpg") -> np.ndarray:
    """A fixture product photo at the size the server passes (the 256x192 x4 close-up)."""
    img = Image.open(FIXTURES / "fashion-products" / "images" / name).convert("RGB")
    return np.asarray(img.resize((192, 256), Image.Resampling.LANCZOS))


def viton() -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / "viton" / "test" / "image" / "000010_0.jpg").convert("RGB"))


@pytest.mark.parametrize(
    "change, field",
    [
        (dict(title="x" * 71), "title"),  # too long
        (dict(title="国" * 36), "title"),  # CJK counts two columns
        (dict(title=""), "title"),
        (dict(title="Dress\nnow"), "title"),  # control character
        (dict(title=b"Dress \xff"), "title"),  # invalid UTF-8
        (dict(title="Sale 🔥"), "title"),  # undrawable
        (dict(badge="W" * 15), "badge"),
        (dict(badge="\x07NEW"), "badge"),
        (dict(cta="Buy \U0001f6d2"), "cta"),
        (dict(cta="x" * 25), "cta"),
        (dict(price="19,99"), "price"),
        (dict(price="-5"), "price"),
        (dict(price="1e3"), "price"),
        (dict(price="19.999"), "price"),  # more decimals than EUR has
        (dict(price="1980.5", currency="JPY"), "price"),
        (dict(price="1234567890"), "price"),
        (dict(price=""), "price"),
        (dict(currency="XYZ"), "currency"),
        (dict(currency="$"), "currency"),  # ambiguous symbol
        (dict(format="1080x1081"), "format"),
        (dict(brand_colour="#12345"), "brand_colour"),
        (dict(brand_colour="red"), "brand_colour"),
        (dict(encoding="gif"), "encoding"),
        (dict(variants=0), "variants"),
        (dict(variants=17), "variants"),
    ],
)
def test_every_bad_field_is_named(change: dict, field: str) -> None:
    with pytest.raises(RequestError) as e:
        validate_ad_fields(**{**GOOD, **change})
    assert str(e.value).startswith(f"{field}:"), str(e.value)


def test_undrawable_character_error_names_it() -> None:
    with pytest.raises(RequestError, match=r"title: .*U\+1F525"):
        validate_ad_fields(**{**GOOD, "title": "Hot 🔥 deal"})


def test_valid_fields_are_normalised() -> None:
    f = validate_ad_fields(
        **{
            **GOOD,
            "title": b"  Linen   summer dress ",
            "currency": "eur",
            "format": "1200X628",
            "encoding": "JPG",
        },
        brand_colour="#1a73e8",
        variants=4,
    )
    assert f.title == "Linen summer dress" and f.price.amount == Decimal("49.90")
    assert (f.format, f.encoding, f.brand_colour, f.variants) == ("1200x628", "jpeg", (26, 115, 232), 4)
    assert validate_ad_fields(**{**GOOD, "badge": "", "cta": None}).badge is None


@pytest.mark.parametrize(
    "price, currency, shown",
    [
        ("1299", "USD", "$1,299.00"),
        ("49.9", "EUR", "49,90\u00a0€"),
        ("49.90", "€", "49,90\u00a0€"),
        ("12980", "JPY", "¥12,980"),
        ("199", "CNY", "¥199.00"),
        ("39900", "KRW", "₩39,900"),
        ("12345678.5", "INR", "₹1,23,45,678.50"),
        ("1299.5", "CHF", "CHF\u00a01’299.50"),
        ("0.99", "GBP", "£0.99"),
        ("1499", "SEK", "1\u00a0499,00\u00a0kr"),
        ("29.9", "BRL", "R$\u00a029,90"),
    ],
)
def test_price_formats(price: str, currency: str, shown: str) -> None:
    assert parse_price(price, currency).format() == shown


def fields(fmt: str, **kw: object) -> AdFields:
    return validate_ad_fields(**{**GOOD, "format": fmt, **kw})  # type: ignore[arg-type]


def check_render(img: np.ndarray, f: AdFields, placements: list[TextPlacement]) -> None:
    w, h = FORMATS[f.format]
    assert img.shape == (h, w, 3) and img.dtype == np.uint8
    drawn = {p.field for p in placements}
    assert {"title", "price"} <= drawn
    assert ("badge" in drawn) == bool(f.badge) and ("cta" in drawn) == bool(f.cta)
    for p in placements:
        box = p.layout.box
        assert box.x0 >= 0 and box.y0 >= 0 and box.x1 <= w and box.y1 <= h, (p.field, box)
        ink = p.layout.draw_mask((w, h)).getbbox()  # the pixels really drawn
        assert ink is not None
        assert box.x0 <= ink[0] and box.y0 <= ink[1] and ink[2] <= box.x1 and ink[3] <= box.y1, (
            p.field,
            ink,
            box,
        )
        assert p.contrast >= 4.5, (p.field, p.colour, p.contrast)
    if f.format == "1080x1920":  # stories: no text under the apps' top and bottom bars
        for p in placements:
            assert p.layout.ink.y0 >= 250 and p.layout.ink.y1 <= 1920 - 340, p.field


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("template", range(len(TEMPLATES)))
def test_render_every_format_and_template(fmt: str, template: int) -> None:
    f = fields(fmt)
    placements: list[TextPlacement] = []
    img = render_ad(product(), f, template, placements)
    check_render(img, f, placements)


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("template", range(len(TEMPLATES)))
def test_worst_case_fields_fit_every_layout(fmt: str, template: int) -> None:
    """The longest allowed texts, in the widest letters, fit every layout (wrapped and shrunk)."""
    latin = fields(fmt, title="W" * 70, price="999999999.99", currency="INR", badge="W" * 14, cta="W" * 24)
    placements: list[TextPlacement] = []
    check_render(render_ad(viton(), latin, template, placements), latin, placements)
    cjk = fields(fmt, title="鑫" * 35, price="123456789", currency="KRW", badge="鑫" * 7, cta="鑫" * 12)
    placements = []
    check_render(render_ad(product("1562.jpg"), cjk, template, placements), cjk, placements)


def test_cjk_and_mixed_titles_render() -> None:
    for title in (
        "夏季新品「连衣裙」限时优惠，全场包邮",
        "軽量スニーカー、毎日の通勤に。",
        "여름 신상 원피스 특가",
        "Nike Air 夏季限定",
    ):
        f = fields("1080x1080", title=title, cta="立即购买", badge="新品")
        placements: list[TextPlacement] = []
        check_render(render_ad(product(), f, 0, placements), f, placements)
        assert next(p for p in placements if p.field == "title").layout.lines


def test_brand_colour_is_the_panel_colour() -> None:
    f = fields("1080x1080", brand_colour="#1A73E8")
    img = render_ad(product(), f, 0)
    assert tuple(img[1075, 5]) == (0x1A, 0x73, 0xE8)  # bottom-left corner of the text panel


def test_light_brand_colour_gets_dark_text() -> None:
    f = fields("1080x1080", brand_colour="#FFD400")
    placements: list[TextPlacement] = []
    render_ad(product(), f, 0, placements)
    title = next(p for p in placements if p.field == "title")
    assert sum(title.colour) < 200 and title.contrast >= 4.5


def test_templates_differ() -> None:
    f = fields("1080x1080")
    imgs = [render_ad(product(), f, t).astype(np.int16) for t in range(len(TEMPLATES))]
    for i in range(len(imgs)):
        for j in range(i + 1, len(imgs)):
            assert np.abs(imgs[i] - imgs[j]).mean() > 20


def test_bad_template_and_product() -> None:
    with pytest.raises(ValueError):
        render_ad(product(), fields("1080x1080"), len(TEMPLATES))
    with pytest.raises(ValueError):
        render_ad(product()[..., 0], fields("1080x1080"), 0)


def test_dilate_matches_scipy() -> None:
    from scipy import ndimage

    from ecomgen.creative.drawing import _dilate

    m = np.random.default_rng(0).random((40, 57)) > 0.97
    np.testing.assert_array_equal(_dilate(m, 2), ndimage.binary_dilation(m, structure=np.ones((5, 5), bool)))
