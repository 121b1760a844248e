"""The batch tool's inputs: catalogue rows (CSV or JSON lines), the asset plan, and the requests.

Standard library and the contracts only: nothing here talks to a server.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .contracts import AD_CREATIVE, INT32_MAX, INT64_MAX, MAX_SCENE_VARIANTS, PRODUCT_SCENE
from .ops import check_choice

TEXT_FIELDS = ("title", "price", "currency", "badge", "cta", "brand_colour", "restock_date")
ALIASES = {"class_id": "class", "brand_color": "brand_colour", "image": "photo", "photo_path": "photo"}
MAX_NAME = 100  # characters of a SKU's folder name


class RowError(ValueError):
    """A catalogue row that cannot be made: reported and skipped, never fatal."""


@dataclass(frozen=True)
class BadRow:
    """A row reported and skipped: ``line`` in the catalogue file (the header is line 1 of a CSV)."""

    line: int
    sku: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {"kind": "bad_row", "line": self.line, "sku": self.sku, "reason": self.reason}


@dataclass(frozen=True)
class Row:
    """One product of the catalogue, parsed and checked."""

    line: int
    sku: str
    name: str  # the SKU made safe as a folder name
    photo: Path | None = None
    class_id: int | None = None
    seed: int = 0
    text: Mapping[str, str] = field(default_factory=dict)  # TEXT_FIELDS that were given
    stock: int | None = None
    low_stock_threshold: int | None = None

    def product_key(self) -> dict[str, Any]:
        """What identifies the product: the photo file (path, size, mtime), or class and seed."""
        if self.photo is not None:
            st = self.photo.stat()
            return {"photo": str(self.photo), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
        return {"class_id": self.class_id, "seed": self.seed}


def safe_name(sku: str) -> str:
    """A SKU as a folder name: letters, digits, ``.``, ``_`` and ``-`` kept, other runs become ``_``;
    no leading dot (no hidden folders, no ``..``); at most 100 characters."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", sku.strip()).lstrip(".")[:MAX_NAME]


# --- reading ---------------------------------------------------------------------------------------


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line, record) for each row; a record that cannot be parsed comes as the reason (a str)."""
    text = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json") or text.lstrip().startswith("{"):
        for n, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                record = json.loads(raw)
            except json.JSONDecodeError as exc:
                yield n, f"not a JSON object: {exc.msg}"
                continue
            yield n, record if isinstance(record, dict) else "not a JSON object"
        return
    reader = csv.DictReader(text.splitlines(keepends=True), restkey="\0extra")
    for record in reader:
        if "\0extra" in record:
            yield reader.line_num, f"more fields than the header's {len(reader.fieldnames or [])}"
        elif any(v not in (None, "") for v in record.values()):
            yield reader.line_num, dict(record)


def _normalise(record: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in record.items():
        name = re.sub(r"[\s-]+", "_", str(key).strip().lower())
        name = ALIASES.get(name, name)
        if isinstance(value, str):
            value = value.strip()
        if value is not None and value != "":
            out[name] = value
    return out


def _int(record: Mapping[str, Any], name: str, lo: int, hi: int) -> int | None:
    value = record.get(name)
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not (isinstance(value, int) or re.fullmatch(r"[+-]?\d+", str(value))):
        raise RowError(f"{name} must be an integer, got {value!r}")
    number = int(value)
    if not lo <= number <= hi:
        raise RowError(f"{name} {number} out of range [{lo}, {hi}]")
    return number


def _photo(record: Mapping[str, Any], base: Path) -> Path | None:
    raw = record.get("photo")
    if raw is None:
        return None
    path = Path(str(raw)).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise RowError(f"photo not found: {raw}")
    return path


def _class(record: Mapping[str, Any]) -> int | None:
    value = record.get("class")
    if value is None:
        return None
    try:
        return PRODUCT_SCENE.class_id(value if isinstance(value, str) else int(value))
    except (TypeError, ValueError) as exc:
        raise RowError(str(exc)) from None


def parse_row(record: Mapping[str, Any], line: int, base: Path) -> Row:
    """One catalogue record -> a :class:`Row`, or :class:`RowError` saying what is wrong with it."""
    fields = _normalise(record)
    sku = str(fields.get("sku", ""))
    if not sku:
        raise RowError("no sku")
    name = safe_name(sku)
    if not name:
        raise RowError(f"sku {sku!r} has no character usable in a file name")
    photo, class_id = _photo(fields, base), _class(fields)
    if photo is None and class_id is None:
        raise RowError("no product: give a photo, or a class and seed")
    return Row(
        line=line,
        sku=sku,
        name=name,
        photo=photo,
        class_id=class_id,
        seed=_int(fields, "seed", 0, INT64_MAX) or 0,
        text={k: str(fields[k]) for k in TEXT_FIELDS if k in fields},
        stock=_int(fields, "stock", 0, INT32_MAX),
        low_stock_threshold=_int(fields, "low_stock_threshold", 1, INT32_MAX),
    )


def read_catalogue(path: Path) -> tuple[list[Row], list[BadRow]]:
    """Every row of a CSV or JSON-lines catalogue: the good ones, and the bad ones with the reason.

    SKUs must be unique, also as folder names (compared ignoring case, for case-insensitive file
    systems): a later duplicate is a bad row. Photo paths are relative to the catalogue's folder.
    """
    rows: list[Row] = []
    bad: list[BadRow] = []
    seen: dict[str, int] = {}
    for line, record in _records(path):
        sku = str(record.get("sku", "")) if isinstance(record, dict) else ""
        try:
            if isinstance(record, str):
                raise RowError(record)
            row = parse_row(record, line, path.parent)
            first = seen.setdefault(row.name.lower(), line)
            if first != line:
                raise RowError(f"duplicate sku (as a folder name) of line {first}")
        except RowError as exc:
            bad.append(BadRow(line, sku, str(exc)))
            continue
        rows.append(row)
    return rows, bad


# --- what to make ---------------------------------------------------------------------------------

_AD_ENCODING_EXT = {"jpeg": "jpg", "png": "png", "webp": "webp"}
_FORMAT = re.compile(r"^\d+x\d+$")


@dataclass(frozen=True)
class AssetPlan:
    """The assets made for each row.

    ``cutout``: the photo as an RGBA PNG with the served matte as alpha (rows with a photo only);
    ``white``: the marketplace main image; ``scenes``: that many scene images (``scene``: ``auto``
    or a library name); ``ads``: one ad creative per format; ``inventory``: the stock image.
    """

    cutout: bool = True
    white: bool = True
    scenes: int = 0
    ads: tuple[str, ...] = ()
    inventory: bool = False
    white_format: str = "2000x2000"
    scene_format: str = "1080x1350"
    scene: str = "auto"
    encoding: str = "png"  # of the white main image and the scenes
    ad_encoding: str = "jpeg"

    def __post_init__(self) -> None:
        for value, what in ((self.white_format, "white format"), (self.scene_format, "scene format")):
            check_choice(PRODUCT_SCENE, "formats", value, what)
        for fmt in self.ads:
            check_choice(AD_CREATIVE, "formats", fmt, "ad format")
        check_choice(PRODUCT_SCENE, "encodings", self.encoding, "encoding")
        check_choice(AD_CREATIVE, "encodings", self.ad_encoding, "ad encoding")
        if not 0 <= self.scenes <= MAX_SCENE_VARIANTS:
            raise ValueError(f"scenes must be in [0, {MAX_SCENE_VARIANTS}], got {self.scenes}")
        if not self.scene.strip():
            raise ValueError("scene must be 'auto' or a scene name")
        if not (self.cutout or self.white or self.scenes or self.ads or self.inventory):
            raise ValueError("the asset plan asks for nothing")

    @classmethod
    def parse(cls, spec: str, **options: Any) -> AssetPlan:
        """``"cutout,white,scenes:3,ads:1080x1080,1200x628,inventory"``; ``options`` set the formats,
        the scene and the encodings. A bare format after ``ads:`` adds another ad format."""
        found: dict[str, Any] = {"cutout": False, "white": False, "scenes": 0, "ads": [], "inventory": False}
        last = ""
        for token in (t.strip().lower() for t in spec.split(",")):
            name, _, arg = token.partition(":")
            if _FORMAT.match(token) and last == "ads":
                found["ads"].append(token)
            elif name in ("cutout", "white", "inventory") and not arg:
                found[name] = True
            elif name == "scenes" and (arg.isdigit() or not arg):
                found["scenes"] = int(arg or 1)
            elif name == "ads" and arg:
                found["ads"].append(arg)
            else:
                raise ValueError(
                    f"unknown asset {token!r}: use cutout, white, scenes:N, ads:FORMAT[,FORMAT], inventory"
                )
            last = name if not _FORMAT.match(token) else last
        found["ads"] = tuple(dict.fromkeys(found["ads"]))
        return cls(**found, **options)


@dataclass(frozen=True)
class Task:
    """One request for one row, and the files it makes: ``<row.name>/<asset>.<ext>`` each."""

    row: Row
    kind: str  # cutout | white | scenes | ad | inventory
    model: str
    assets: tuple[str, ...]
    ext: str
    fmt: str = ""
    key: str = ""  # fingerprint of the request: a changed row or plan re-makes the asset

    def file(self, asset: str) -> str:
        return f"{self.row.name}/{asset}.{self.ext}"


def _key(row: Row, kind: str, **request: Any) -> str:
    blob = json.dumps({"kind": kind, "product": row.product_key(), **request}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_problem(row: Row, plan: AssetPlan) -> str | None:
    """Why this row cannot be made with this plan (a bad row), or None."""
    if plan.ads:
        missing = [k for k in ("title", "price", "currency") if k not in row.text]
        if missing:
            return f"missing {', '.join(missing)} for an ad"
    if plan.inventory and row.stock is None:
        return "missing stock for the inventory image"
    return None


def tasks_for(row: Row, plan: AssetPlan) -> list[Task]:
    """The requests of one row. A row without a photo gets no cut-out (see :func:`no_photo`)."""
    out: list[Task] = []
    if plan.cutout and row.photo is not None:
        out.append(Task(row, "cutout", "product_cutout", ("cutout",), "png", key=_key(row, "cutout")))
    ext = _AD_ENCODING_EXT[check_choice(PRODUCT_SCENE, "encodings", plan.encoding, "encoding")]
    if plan.white:
        key = _key(row, "white", fmt=plan.white_format, encoding=plan.encoding)
        out.append(Task(row, "white", "product_scene", ("white",), ext, plan.white_format, key))
    if plan.scenes:
        names = tuple(f"scene-{k}" for k in range(1, plan.scenes + 1))
        key = _key(
            row, "scenes", fmt=plan.scene_format, scene=plan.scene, n=plan.scenes, encoding=plan.encoding
        )
        out.append(Task(row, "scenes", "product_scene", names, ext, plan.scene_format, key))
    ad_ext = _AD_ENCODING_EXT[check_choice(AD_CREATIVE, "encodings", plan.ad_encoding, "ad encoding")]
    for fmt in plan.ads:
        key = _key(row, "ad", fmt=fmt, encoding=plan.ad_encoding, text=dict(row.text))
        out.append(Task(row, "ad", "ad_creative", (f"ad-{fmt}",), ad_ext, fmt, key))
    if plan.inventory:
        extra = {
            "stock": row.stock,
            "threshold": row.low_stock_threshold,
            "date": row.text.get("restock_date"),
        }
        out.append(
            Task(
                row,
                "inventory",
                "inventory_image",
                ("inventory",),
                "png",
                key=_key(row, "inventory", **extra),
            )
        )
    return out


def no_photo(row: Row, plan: AssetPlan) -> bool:
    """A cut-out was asked for but the row has no photo (generated product): skipped, not an error."""
    return plan.cutout and row.photo is None
