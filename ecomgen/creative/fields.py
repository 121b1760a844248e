"""Ad request fields: parsing and validation (each problem is a RequestError naming its field).

``validate_ad_fields`` turns the raw request fields into an :class:`AdFields`; prices are parsed per
currency (:func:`parse_price`, :class:`Money` formats them as shoppers of the currency write them) and
the brand colour as ``#RRGGBB`` (:func:`parse_colour`). Every text must be drawable by the shipped fonts.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

import numpy as np

from ecomgen.creative.text import RGB, check_drawable
from ecomgen.errors import RequestError

FORMATS: dict[str, tuple[int, int]] = {  # name -> (width, height)
    "1080x1080": (1080, 1080),
    "1080x1350": (1080, 1350),
    "1200x628": (1200, 628),
    "1080x1920": (1080, 1920),
}
ENCODINGS = ("jpeg", "png", "webp")
MAX_VARIANTS = 16
# Limits in display columns: East Asian wide/fullwidth characters count 2 (they are ~2x as wide).
LIMITS = {"title": 70, "badge": 14, "cta": 24}

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
