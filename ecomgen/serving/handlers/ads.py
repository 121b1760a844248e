"""ad_creative, inventory_image and inventory_sheet: products, then layout, then labelled encoding.

Each model is one Python step, one request per ad set, SKU or sheet (no batch axis). The step
checks every field once (a bad request never reaches a network), then takes the product from the
route the request asks for (``products.py``): an uploaded photo is decoded once and cut out by
the matting network; a generated product runs the generator and, for close-ups, the x4 network.
Only that route's networks run. Layouts come from ``ecomgen.creative.ads`` / ``inventory``; every
image is encoded with provenance (watermark, XMP source type, C2PA when configured).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np

from ecomgen.creative import ads, inventory
from ecomgen.creative.images import as_bytes
from ecomgen.creative.provenance import COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, TRAINED_ALGORITHMIC_MEDIA
from ecomgen.errors import RequestError
from ecomgen.serving.handlers.labelled import labelled, signer
from ecomgen.serving.handlers.products import (
    Product,
    Products,
    choice,
    decode_uploads,
    own_alpha,
    seeds_for,
)
from ecomgen.serving.step import Step

AD_FIELDS = ("title", "price", "currency", "badge", "cta", "format", "brand_colour", "encoding")
# Where a step keeps what it checked, beside the request's arrays (prepare -> compute, no re-parse).
CHECKED = "_checked"


def field(arrays: dict[str, np.ndarray], name: str) -> bytes | None:
    """The first element of an optional BYTES input (None when absent)."""
    if name not in arrays:
        return None
    return as_bytes(arrays[name].reshape(-1)[0])


def scalar(arrays: dict[str, np.ndarray], name: str) -> int | None:
    return int(arrays[name].reshape(-1)[0]) if name in arrays else None


def ad_fields(arrays: dict[str, np.ndarray]) -> ads.AdFields:
    kwargs = {name: field(arrays, name) for name in AD_FIELDS}
    present = {k: v for k, v in kwargs.items() if v is not None}
    for required in ("title", "price", "currency", "format"):
        if required not in present:
            raise RequestError(f"missing required input '{required}'")
    return ads.validate_ad_fields(variants=scalar(arrays, "variants") or 1, **present)


def source_type(uploaded: bool) -> str:
    return COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA if uploaded else TRAINED_ALGORITHMIC_MEDIA


def checked(arrays: dict[str, np.ndarray], record: object) -> dict[str, np.ndarray]:
    """The request's arrays with what ``prepare`` checked and decoded, for ``compute``."""
    holder = np.empty(1, dtype=object)
    holder[0] = record
    return {**arrays, CHECKED: holder}


class ProductStep(Step):
    """A step that lays out products: it owns their route (upload -> cut-out, or generate)."""

    def setup(self) -> None:
        self.products = Products(self)
        signer()

    def uploads_or_generated(self, arrays: dict[str, np.ndarray], rows: int, upscale: bool) -> list[Product]:
        if choice(arrays) == "upload":
            return [
                self.products.with_matte(Product(np.ascontiguousarray(img[..., :3]), own_alpha(img), True))
                for img in arrays["product"]
            ]
        return self.products.generate(*seeds_for(arrays, rows), upscale=upscale)


@dataclass
class AdRequest:
    fields: ads.AdFields


class AdCreative(ProductStep):
    """``variants`` laid-out, labelled creatives from an uploaded photo (cut out) or generated close-ups."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fields = ad_fields(arrays)
        if choice(arrays) == "upload":
            arrays = {**arrays, "product": object_array(decode_uploads(arrays, keep_alpha=True))}
        return checked(arrays, AdRequest(fields))

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req: AdRequest = batch[CHECKED][0]
        fields = req.fields
        products = self.uploads_or_generated(batch, fields.variants, upscale=True)
        images = []
        for v in range(fields.variants):
            p = products[v % len(products)]
            art = ads.render_ad(p.rgb, fields, v % len(ads.TEMPLATES), alpha=p.alpha)
            images.append(labelled(art, fields.encoding, source_type(p.uploaded), fields.title))
        return {"images": np.array(images, dtype=np.object_)}


def object_array(items: list[np.ndarray]) -> np.ndarray:
    out = np.empty(len(items), dtype=object)
    for i, item in enumerate(items):
        out[i] = item
    return out


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def stock_state(arrays: dict[str, np.ndarray], i: int = 0, prefix: str = "") -> inventory.State:
    stock = arrays["stock"].reshape(-1)[i]
    threshold = arrays["low_stock_threshold"].reshape(-1)[i] if "low_stock_threshold" in arrays else None
    restock = as_bytes(arrays["restock_date"].reshape(-1)[i]) if "restock_date" in arrays else None
    try:
        return inventory.stock_state(
            int(stock), None if threshold is None else int(threshold), restock or None, _today()
        )
    except RequestError as e:
        raise RequestError(f"{prefix}{e}") from e


def encoding(arrays: dict[str, np.ndarray], default: str) -> str:
    value = (field(arrays, "encoding") or default.encode()).decode("utf-8", "replace").strip().lower()
    value = "jpeg" if value == "jpg" else value
    if value not in ads.ENCODINGS:
        raise RequestError(f"encoding: {value!r} is not one of {', '.join(ads.ENCODINGS)}")
    return value


@dataclass
class InventoryRequest:
    state: inventory.State
    encoding: str


class InventoryImage(ProductStep):
    """One SKU's product image with its stock state: an uploaded photo cut out onto white, or a
    generated close-up."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        record = InventoryRequest(stock_state(arrays), encoding(arrays, "png"))
        if choice(arrays) == "upload":
            arrays = {**arrays, "product": object_array(decode_uploads(arrays, keep_alpha=True))}
        return checked(arrays, record)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req: InventoryRequest = batch[CHECKED][0]
        (p,) = self.uploads_or_generated(batch, 1, upscale=True)
        image = inventory.render_inventory(p.rgb, req.state, alpha=p.alpha)
        return {"image": np.array([labelled(image, req.encoding, source_type(p.uploaded))], dtype=np.object_)}


def sheet_rows(arrays: dict[str, np.ndarray]) -> int:
    n = arrays["sku"].reshape(-1).size
    for name in ("stock", "class_id", "seed", "low_stock_threshold", "restock_date", "product"):
        if name in arrays and arrays[name].reshape(-1).size != n:
            raise RequestError(f"{name}: {arrays[name].reshape(-1).size} values for {n} SKUs")
    if not 1 <= n <= inventory.MAX_SKUS:
        raise RequestError(f"sku: need 1..{inventory.MAX_SKUS} SKUs, got {n}")
    return n


@dataclass
class SheetRequest:
    skus: list[str]
    states: list[inventory.State]
    title: str | None
    encoding: str


class InventorySheet(ProductStep):
    """A contact sheet of up to 64 SKUs: uploaded photos as they are (small cells), or thumbnails."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = sheet_rows(arrays)
        skus = arrays["sku"].reshape(-1)
        names = [inventory.validate_sku(as_bytes(skus[i]), f"sku[{i}]") for i in range(n)]
        states = [stock_state(arrays, i, prefix=f"SKU {i}: ") for i in range(n)]
        title = field(arrays, "title")
        if title is not None:
            inventory.validate_sku(title, "title")  # printable, drawable, <= 32
        record = SheetRequest(names, states, title.decode() if title else None, encoding(arrays, "png"))
        if choice(arrays) == "upload":
            arrays = {**arrays, "product": object_array(decode_uploads(arrays, keep_alpha=True))}
        return checked(arrays, record)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req: SheetRequest = batch[CHECKED][0]
        if choice(batch) == "upload":
            products = [img[..., :3] for img in batch["product"]]
            uploaded = True
        else:
            made = self.products.generate(*seeds_for(batch, len(req.skus)), upscale=False)
            products, uploaded = [p.rgb for p in made], False
        items = list(zip(products, req.skus, req.states, strict=True))
        sheet = inventory.render_sheet(items, req.title)
        return {"sheet": np.array([labelled(sheet, req.encoding, source_type(uploaded))], dtype=np.object_)}
