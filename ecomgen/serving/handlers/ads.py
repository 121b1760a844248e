"""ad_creative and inventory_image/inventory_sheet: products, then layout, then labelled encoding.

Each model is one request per ad set, SKU or sheet (no batch axis). The first step checks
every field (so a bad request never reaches the networks) and turns the product choice into
generator inputs: ``variants`` latents for seeds ``seed, seed+1, ...``, or one placeholder row
when the caller uploads a product photo, since an ensemble runs every step. The last step
renders the layouts with ``ecomgen.creative.ads`` / ``inventory`` and encodes each image with
provenance (watermark, XMP source type, C2PA when configured).
"""

from __future__ import annotations

import datetime as dt

import numpy as np

from ecomgen.creative import ads, inventory
from ecomgen.creative.images import as_bytes, decode
from ecomgen.creative.provenance import COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, TRAINED_ALGORITHMIC_MEDIA
from ecomgen.errors import RequestError
from ecomgen.numerics import latents_from_seeds, one_hot, to_uint8_hwc
from ecomgen.serving.handlers.labelled import labelled, signer
from ecomgen.serving.step import Step

INT64_MAX = 2**63 - 1
PHOTO_MIN_SIDE, PHOTO_MAX_SIDE = 32, 4096
AD_FIELDS = ("title", "price", "currency", "badge", "cta", "format", "brand_colour", "encoding")


def field(arrays: dict[str, np.ndarray], name: str) -> bytes | None:
    """The first element of an optional BYTES input (None when absent)."""
    if name not in arrays:
        return None
    return as_bytes(arrays[name].reshape(-1)[0])


def scalar(arrays: dict[str, np.ndarray], name: str) -> int | None:
    return int(arrays[name].reshape(-1)[0]) if name in arrays else None


def photos(arrays: dict[str, np.ndarray], name: str = "product") -> list[np.ndarray]:
    """Uploaded product photos (JPEG/PNG/WebP), decoded and checked."""
    if name not in arrays:
        return []
    return [decode(name, as_bytes(v), PHOTO_MIN_SIDE, PHOTO_MAX_SIDE) for v in arrays[name].reshape(-1)]


def generator_inputs(
    arrays: dict[str, np.ndarray], rows: int, latent_dim: int, num_classes: int
) -> dict[str, np.ndarray]:
    """Latents and one-hot classes for ``rows`` seeds from ``seed`` on, or one placeholder row."""
    if "product" in arrays:
        return {
            "z": np.zeros((1, latent_dim), np.float32),
            "class_onehot": one_hot(np.zeros(1, np.int64), num_classes),
        }
    if "class_id" not in arrays or "seed" not in arrays:
        raise RequestError("product: send class_id and seed, or an uploaded product photo")
    classes, seeds = arrays["class_id"].reshape(-1), arrays["seed"].reshape(-1)
    if classes.size == 1:
        seed = int(seeds[0])
        if seed > INT64_MAX - rows:
            raise RequestError(
                f"seed: {seed} leaves no room for {rows} variants (at most {INT64_MAX - rows})"
            )
        classes, seeds = np.repeat(classes, rows), seed + np.arange(rows, dtype=np.int64)
    return {"z": latents_from_seeds(seeds, latent_dim), "class_onehot": one_hot(classes, num_classes)}


class _Products(Step):
    def setup(self) -> None:
        self.latent_dim = int(self.params["latent_dim"])
        self.num_classes = int(self.params["num_classes"])


def ad_fields(arrays: dict[str, np.ndarray]) -> ads.AdFields:
    kwargs = {name: field(arrays, name) for name in AD_FIELDS}
    present = {k: v for k, v in kwargs.items() if v is not None}
    for required in ("title", "price", "currency", "format"):
        if required not in present:
            raise RequestError(f"{required}: missing")
    return ads.validate_ad_fields(variants=scalar(arrays, "variants") or 1, **present)


class AdPre(_Products):
    """Check every field of an ad request; the generator inputs of its variants."""

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        ad_fields(arrays)
        photos(arrays)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return generator_inputs(batch, ad_fields(batch).variants, self.latent_dim, self.num_classes)


class AdCompose(Step):
    """Close-ups (or the uploaded photo) into ``variants`` laid-out, labelled creatives."""

    def setup(self) -> None:
        signer()

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        fields = ad_fields(batch)
        uploaded = photos(batch)
        products = uploaded * fields.variants if uploaded else list(to_uint8_hwc(batch["highres"]))
        source = COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA if uploaded else TRAINED_ALGORITHMIC_MEDIA
        images = [
            labelled(
                ads.render_ad(product, fields, v % len(ads.TEMPLATES)), fields.encoding, source, fields.title
            )
            for v, product in enumerate(products[: fields.variants])
        ]
        return {"images": np.array(images, dtype=np.object_)}


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


class InventoryPre(_Products):
    """One SKU: check the stock fields; the generator inputs of its product."""

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        stock_state(arrays)
        encoding(arrays, "png")
        photos(arrays)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return generator_inputs(batch, 1, self.latent_dim, self.num_classes)


class InventoryCompose(Step):
    def setup(self) -> None:
        signer()

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        uploaded = photos(batch)
        product = uploaded[0] if uploaded else to_uint8_hwc(batch["highres"])[0]
        source = COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA if uploaded else TRAINED_ALGORITHMIC_MEDIA
        image = inventory.render_inventory(product, stock_state(batch))
        return {"image": np.array([labelled(image, encoding(batch, "png"), source)], dtype=np.object_)}


def sheet_rows(arrays: dict[str, np.ndarray]) -> int:
    n = arrays["sku"].reshape(-1).size
    for name in ("stock", "class_id", "seed", "low_stock_threshold", "restock_date", "product"):
        if name in arrays and arrays[name].reshape(-1).size != n:
            raise RequestError(f"{name}: {arrays[name].reshape(-1).size} values for {n} SKUs")
    if not 1 <= n <= inventory.MAX_SKUS:
        raise RequestError(f"sku: need 1..{inventory.MAX_SKUS} SKUs, got {n}")
    return n


def sheet_items(
    arrays: dict[str, np.ndarray], products: list[np.ndarray]
) -> list[tuple[np.ndarray, str, inventory.State]]:
    skus = arrays["sku"].reshape(-1)
    return [
        (
            product,
            inventory.validate_sku(as_bytes(skus[i]), f"sku[{i}]"),
            stock_state(arrays, i, prefix=f"SKU {i}: "),
        )
        for i, product in enumerate(products)
    ]


class SheetPre(_Products):
    """Up to 64 SKUs: check them all; the generator inputs of their products."""

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        n = sheet_rows(arrays)
        sheet_items(arrays, [np.zeros((1, 1, 3), np.uint8)] * n)
        encoding(arrays, "png")
        if "title" in arrays:
            inventory.validate_sku(field(arrays, "title") or b"", "title")  # printable, drawable, <= 32
        photos(arrays)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return generator_inputs(batch, sheet_rows(batch), self.latent_dim, self.num_classes)


class SheetCompose(Step):
    def setup(self) -> None:
        signer()

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        uploaded = photos(batch)
        products = uploaded or list(to_uint8_hwc(batch["image"]))
        title = field(batch, "title")
        sheet = inventory.render_sheet(sheet_items(batch, products), title.decode() if title else None)
        source = COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA if uploaded else TRAINED_ALGORITHMIC_MEDIA
        return {"sheet": np.array([labelled(sheet, encoding(batch, "png"), source)], dtype=np.object_)}
