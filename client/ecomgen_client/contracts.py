"""Public contracts of the served models: what clients and the server agree on.

A contract is a model's name, its input and output tensors (dtype, dims, value ranges,
size bounds) and whether it has a batch axis. The server's served-model specs
(``ecomgen.specs``) wrap these with their internal steps; the thin client validates
requests against them before they leave the process. For a model this module does not
know, :meth:`Contract.from_config` builds the contract from the served ``config.pbtxt``.

This module depends on the standard library and numpy only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# Triton datatype name -> numpy dtype.
_NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "BYTES": np.object_,
}
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class TensorSpec:
    """One input or output tensor; ``dims`` exclude the batch axis (-1 = variable).

    ``value_range`` (inclusive) and the bounds of variable dims (``min_dims``/``max_dims``,
    aligned with ``dims``) are part of the contract: the server rejects requests outside
    them. ``kind`` tells tooling what the values mean: ``"image"`` (float NCHW in [-1, 1]),
    ``"mask"`` (float in [0, 1]) or ``"onehot"``.
    """

    name: str
    dtype: str
    dims: tuple[int, ...]
    optional: bool = False
    value_range: tuple[float, float] | None = None
    min_dims: tuple[int, ...] | None = None
    max_dims: tuple[int, ...] | None = None
    max_bytes: int = 0  # BYTES: the longest element accepted
    kind: str = ""
    # A typical valid value, for tools that must invent a request (load tests, payloads): text for
    # BYTES, a number otherwise. An optional input with an example belongs in a typical request.
    example: str = ""

    def __post_init__(self) -> None:
        if self.dtype not in _NUMPY_DTYPES:
            raise ValueError(f"{self.name}: unknown Triton dtype {self.dtype!r}")
        for bound in (self.min_dims, self.max_dims):
            if bound is not None and len(bound) != len(self.dims):
                raise ValueError(f"{self.name}: dim bounds {bound} do not match dims {self.dims}")
        if (
            self.min_dims
            and self.max_dims
            and any(a > b for a, b in zip(self.min_dims, self.max_dims, strict=True))
        ):
            raise ValueError(f"{self.name}: min_dims {self.min_dims} above max_dims {self.max_dims}")

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(_NUMPY_DTYPES[self.dtype])

    @property
    def config_dtype(self) -> str:
        """The ``DataType`` enum name used in ``config.pbtxt``."""
        return "TYPE_STRING" if self.dtype == "BYTES" else f"TYPE_{self.dtype}"

    @property
    def variable(self) -> bool:
        return any(d < 0 for d in self.dims)

    def batched_shape(self, batch: int) -> tuple[int, ...]:
        return (batch, *self.dims)

    @classmethod
    def from_config(cls, t: Mapping[str, Any], params: Mapping[str, str]) -> TensorSpec:
        """A tensor of a served config (JSON form), with the bounds of its ``contract.<name>`` parameter."""
        dtype = str(t["data_type"]).removeprefix("TYPE_")
        extra = json.loads(params.get(f"contract.{t['name']}", "{}"))
        return cls(
            name=t["name"],
            dtype="BYTES" if dtype == "STRING" else dtype,
            dims=tuple(int(d) for d in t.get("dims", [])),
            # An ensemble declares every input optional (its first step checks them); the contract
            # parameter says which are required.
            optional=bool(t.get("optional", False)) and not extra.get("required", False),
            value_range=tuple(extra["value_range"]) if "value_range" in extra else None,
            min_dims=tuple(extra["min_dims"]) if "min_dims" in extra else None,
            max_dims=tuple(extra["max_dims"]) if "max_dims" in extra else None,
            max_bytes=int(extra.get("max_bytes", 0)),
        )

    def largest_dims(self) -> tuple[int, ...]:
        """``dims`` with every variable dim at its maximum (ValueError when unbounded)."""
        if not self.variable:
            return self.dims
        if self.max_dims is None:
            raise ValueError(f"{self.name}: variable dims {self.dims} need max_dims")
        return tuple(m if d < 0 else d for d, m in zip(self.dims, self.max_dims, strict=True))


def _by_name(tensors: tuple[TensorSpec, ...], name: str, owner: str) -> TensorSpec:
    for t in tensors:
        if t.name == name:
            return t
    raise KeyError(f"{owner} has no tensor {name!r}")


@dataclass(frozen=True)
class Contract:
    """A public model: its name and tensors are the contract on every target.

    ``max_batch_size`` 0 means the model has no batch axis (one request is one unit of
    work, e.g. one shopper for ``personalize``).
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    max_batch_size: int
    description: str = ""
    class_names: tuple[str, ...] = ()
    parameters: tuple[tuple[str, str], ...] = field(default=())

    def __post_init__(self) -> None:
        names = [t.name for t in self.inputs]
        if len(set(names)) != len(names) or len({t.name for t in self.outputs}) != len(self.outputs):
            raise ValueError(f"{self.name}: duplicate tensor names")
        if self.max_batch_size < 0:
            raise ValueError(f"{self.name}: max_batch_size must be >= 0")

    @property
    def batched(self) -> bool:
        return self.max_batch_size > 0

    def input(self, name: str) -> TensorSpec:
        return _by_name(self.inputs, name, self.name)

    def output(self, name: str) -> TensorSpec:
        return _by_name(self.outputs, name, self.name)

    def public_parameters(self) -> dict[str, str]:
        """The config parameters a client may read (``class_names`` for the CLI, ...)."""
        params = {"description": self.description, **dict(self.parameters)}
        if self.class_names:
            params["class_names"] = json.dumps(list(self.class_names))
            params["num_classes"] = str(len(self.class_names))
        return params

    def class_id(self, cls: int | str) -> int:
        """Resolve a class name (case-insensitive) or id to a validated id."""
        if isinstance(cls, str):
            lowered = [c.lower() for c in self.class_names]
            if cls.lower() in lowered:
                return lowered.index(cls.lower())
            if cls.isdigit():
                cls = int(cls)
            else:
                raise ValueError(f"unknown class {cls!r}; expected one of {list(self.class_names)}")
        if not 0 <= int(cls) < len(self.class_names):
            raise ValueError(f"class_id {cls} out of range [0, {len(self.class_names) - 1}]")
        return int(cls)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Contract:
        """The contract of a served model, from ``get_model_config(..., as_json=True)``.

        Lets the client validate requests for models it was not built with; value ranges
        and dim bounds travel in the config's ``contract.<tensor>`` parameters.
        """
        cfg = config.get("config", config)
        params = {k: v.get("string_value", "") for k, v in cfg.get("parameters", {}).items()}
        inputs = tuple(TensorSpec.from_config(t, params) for t in cfg.get("input", []))
        outputs = tuple(TensorSpec.from_config(t, params) for t in cfg.get("output", []))
        max_batch = int(cfg.get("max_batch_size", 0))
        if "contract.max_batch_size" in params:
            # A batched contract served by an ensemble whose tensors carry the rows as their first
            # dim (export/repository.py): the contract is batched, its tensors without that dim.
            max_batch = int(params["contract.max_batch_size"])
            inputs, outputs = tuple(map(_without_rows, inputs)), tuple(map(_without_rows, outputs))
        return cls(
            name=cfg["name"],
            inputs=inputs,
            outputs=outputs,
            max_batch_size=max_batch,
            description=params.get("description", ""),
            class_names=_class_names(params.get("class_names", "")),
        )


def _without_rows(t: TensorSpec) -> TensorSpec:
    """``t`` without its first dim (the rows of a batch)."""
    return TensorSpec(
        t.name,
        t.dtype,
        t.dims[1:],
        optional=t.optional,
        value_range=t.value_range,
        min_dims=t.min_dims[1:] if t.min_dims else None,
        max_dims=t.max_dims[1:] if t.max_dims else None,
        max_bytes=t.max_bytes,
    )


def _class_names(raw: str) -> tuple[str, ...]:
    """The JSON list in a config's ``class_names``; anything else means "none"."""
    try:
        names = json.loads(raw)
    except ValueError:
        return ()
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        return tuple(names)
    return ()


def contract_parameters(t: TensorSpec) -> dict[str, str]:
    """The ``contract.<tensor>`` config parameter that :meth:`Contract.from_config` reads back."""
    extra: dict[str, Any] = {}
    if t.value_range is not None:
        extra["value_range"] = list(t.value_range)
    if t.min_dims is not None:
        extra["min_dims"] = list(t.min_dims)
    if t.max_dims is not None:
        extra["max_dims"] = list(t.max_dims)
    if t.max_bytes:
        extra["max_bytes"] = t.max_bytes
    return {f"contract.{t.name}": json.dumps(extra, sort_keys=True)} if extra else {}


# --- product_gan -----------------------------------------------------------------

PRODUCT_CLASSES: tuple[str, ...] = (
    "Tshirts",
    "Shirts",
    "Tops",
    "Jeans",
    "Dresses",
    "Casual Shoes",
    "Heels",
    "Handbags",
    "Watches",
    "Sunglasses",
)
PRODUCT_IMAGE_HW = (64, 48)
CLASS_ID = TensorSpec("class_id", "INT32", (1,), value_range=(0, len(PRODUCT_CLASSES) - 1))
SEED = TensorSpec("seed", "INT64", (1,), value_range=(0, INT64_MAX))

PRODUCT_GAN = Contract(
    name="product_gan",
    description="Class-conditional 64x48 product-image GAN (SNGAN-style, conditional BN).",
    inputs=(CLASS_ID, SEED),
    outputs=(TensorSpec("image", "UINT8", (*PRODUCT_IMAGE_HW, 3)),),
    max_batch_size=64,
    class_names=PRODUCT_CLASSES,
)

# --- tryon -----------------------------------------------------------------------

TRYON_HW = (256, 192)
PHOTO_MIN_SIDE, PHOTO_MAX_SIDE = 64, 2048
MAX_ENCODED_BYTES = 16 << 20
# Room for the labels of an encoded output: XMP, a C2PA manifest with its certificate chain.
LABEL_BYTES = 256 << 10


def encoded_max_bytes(height: int, width: int) -> int:
    """The largest encoded RGB image of this size we emit: PNG of incompressible pixels (a filter
    byte a row, deflate's stored-block overhead), JPEG and WebP stay below it, plus the labels."""
    raw = height * (3 * width + 1)
    return raw + raw // 1000 + LABEL_BYTES


def _photo(name: str) -> TensorSpec:
    return TensorSpec(
        name,
        "UINT8",
        (-1, -1, 3),
        min_dims=(PHOTO_MIN_SIDE, PHOTO_MIN_SIDE, 3),
        max_dims=(PHOTO_MAX_SIDE, PHOTO_MAX_SIDE, 3),
    )


TRYON = Contract(
    name="tryon",
    description=(
        "Virtual try-on at 256x192: person photo + garment photo -> the person wearing it "
        "(parser -> appearance-flow warp -> synthesis). Research weights trained on VITON."
    ),
    inputs=(_photo("person"), _photo("garment")),
    outputs=(
        TensorSpec("image", "UINT8", (*TRYON_HW, 3)),
        TensorSpec("warped_garment", "UINT8", (*TRYON_HW, 3), optional=True),
        TensorSpec("mask", "UINT8", TRYON_HW, optional=True),
    ),
    max_batch_size=8,
)

TRYON_BYTES = Contract(
    name="tryon_bytes",
    description=(
        "tryon for encoded images: JPEG/PNG/WebP bytes in, PNG bytes out, labelled as "
        "AI-generated (a composite of a real photo)."
    ),
    inputs=(
        TensorSpec("person", "BYTES", (1,), max_bytes=MAX_ENCODED_BYTES),
        TensorSpec("garment", "BYTES", (1,), max_bytes=MAX_ENCODED_BYTES),
    ),
    outputs=(TensorSpec("image", "BYTES", (1,), max_bytes=encoded_max_bytes(*TRYON_HW)),),
    max_batch_size=8,
)

# --- detail close-ups ---------------------------------------------------------------

SR_SCALE = 4
SR_MIN_SIDE, SR_MAX_SIDE = 16, 512

UPSCALE = Contract(
    name="upscale",
    description=(
        "x4 super-resolution for detail close-ups: any RGB image of 16-512 px a side -> 4x each side. "
        "Requests of the same size batch together."
    ),
    inputs=(
        TensorSpec(
            "image",
            "UINT8",
            (-1, -1, 3),
            min_dims=(SR_MIN_SIDE, SR_MIN_SIDE, 3),
            max_dims=(SR_MAX_SIDE, SR_MAX_SIDE, 3),
        ),
    ),
    # Not "image": an ensemble's inputs and outputs share one tensor namespace in Triton.
    outputs=(TensorSpec("upscaled", "UINT8", (-1, -1, 3), max_dims=(4 * SR_MAX_SIDE, 4 * SR_MAX_SIDE, 3)),),
    max_batch_size=16,
)

DETAIL_HW = (SR_SCALE * PRODUCT_IMAGE_HW[0], SR_SCALE * PRODUCT_IMAGE_HW[1])
PRODUCT_DETAIL = Contract(
    name="product_detail",
    description="product_gan's image for (class_id, seed), upscaled x4 to a 256x192 detail close-up.",
    inputs=(CLASS_ID, SEED),
    outputs=(TensorSpec("image", "UINT8", (*DETAIL_HW, 3)),),
    max_batch_size=16,
    class_names=PRODUCT_CLASSES,
)

# --- personalisation -------------------------------------------------------------

MAX_HISTORY, MAX_COUNT, SIMILAR_K = 32, 16, 4
FLOAT32_MAX = 3.4028234663852886e38

PERSONALIZE = Contract(
    name="personalize",
    description=(
        "New product images in the style region of what one shopper browsed: a VAE encodes the "
        "history, combines the posteriors (weighted), samples `count` latents around them and decodes; "
        "`similar` holds the ids of the nearest catalogue items to each image."
    ),
    inputs=(
        TensorSpec(
            "history",
            "UINT8",
            (-1, -1, -1, 3),
            min_dims=(1, 32, 32, 3),
            max_dims=(MAX_HISTORY, 1024, 1024, 3),
        ),
        SEED,
        TensorSpec("count", "INT32", (1,), value_range=(1, MAX_COUNT), example="4"),
        TensorSpec(
            "weights",
            "FP32",
            (-1,),
            optional=True,
            value_range=(0.0, FLOAT32_MAX),
            min_dims=(1,),
            max_dims=(MAX_HISTORY,),
        ),
    ),
    outputs=(
        TensorSpec("image", "UINT8", (-1, *PRODUCT_IMAGE_HW, 3), max_dims=(MAX_COUNT, *PRODUCT_IMAGE_HW, 3)),
        TensorSpec("similar", "INT64", (-1, SIMILAR_K), max_dims=(MAX_COUNT, SIMILAR_K)),
    ),
    # One request is one shopper; the encoder and decoder batch across shoppers inside.
    max_batch_size=0,
)

# --- ad creatives and inventory images ---------------------------------------------

AD_FORMATS = ("1080x1080", "1080x1350", "1200x628", "1080x1920")
AD_ENCODINGS = ("jpeg", "png", "webp")
MAX_VARIANTS, MAX_SKUS = 16, 64
AD_MAX_HW = (1920, 1200)  # the tallest and the widest of AD_FORMATS
INVENTORY_MAX_SIDE = 1920  # an inventory image is at most this on its longer side
SHEET_MAX_HW = (3400, 2000)  # 64 SKUs, 8 x 8 cells (ecomgen.creative.inventory.render_sheet; tested)
SHEET_PHOTO_MAX_BYTES = 2 << 20  # an uploaded photo for a 216x288 sheet cell; 64 of them: 128 MiB


def _text(
    name: str, optional: bool = False, max_bytes: int = 1024, rows: bool = False, example: str = ""
) -> TensorSpec:
    dims, max_dims = ((-1,), (MAX_SKUS,)) if rows else ((1,), None)
    return TensorSpec(
        name, "BYTES", dims, optional=optional, max_bytes=max_bytes, max_dims=max_dims, example=example
    )


def _product_choice(rows: bool = False) -> tuple[TensorSpec, ...]:
    """The product: class_id and seed (generated), or an uploaded photo (JPEG/PNG/WebP bytes)."""
    dims, max_dims = ((-1,), (MAX_SKUS,)) if rows else ((1,), None)
    photo_bytes = SHEET_PHOTO_MAX_BYTES if rows else MAX_ENCODED_BYTES
    return (
        TensorSpec(
            "class_id",
            "INT32",
            dims,
            optional=True,
            value_range=CLASS_ID.value_range,
            max_dims=max_dims,
            example="8",
        ),
        TensorSpec(
            "seed", "INT64", dims, optional=True, value_range=SEED.value_range, max_dims=max_dims, example="7"
        ),
        TensorSpec("product", "BYTES", dims, optional=True, max_bytes=photo_bytes, max_dims=max_dims),
    )


AD_CREATIVE = Contract(
    name="ad_creative",
    description=(
        "A batch of ad creatives for A/B tests: the product (generated, upscaled x4, or uploaded), "
        "title, price, badge and call to action laid out in one of the common ad sizes; variants "
        "differ in product seed and layout. Encoded images labelled as AI-generated (XMP, "
        "watermark, C2PA when configured)."
    ),
    inputs=(
        *_product_choice(),
        TensorSpec("variants", "INT32", (1,), value_range=(1, MAX_VARIANTS), example="4"),
        _text("title", max_bytes=512, example="Chrono 42 steel watch"),
        _text("price", max_bytes=32, example="129.00"),
        _text("currency", max_bytes=16, example="EUR"),
        _text("badge", optional=True, max_bytes=64),
        _text("cta", optional=True, max_bytes=96),
        _text("format", max_bytes=16, example=AD_FORMATS[0]),
        _text("brand_colour", optional=True, max_bytes=16),
        _text("encoding", optional=True, max_bytes=8),
    ),
    outputs=(
        TensorSpec(
            "images", "BYTES", (-1,), max_dims=(MAX_VARIANTS,), max_bytes=encoded_max_bytes(*AD_MAX_HW)
        ),
    ),
    max_batch_size=0,
    class_names=PRODUCT_CLASSES,
    parameters=(("formats", json.dumps(AD_FORMATS)), ("encodings", json.dumps(AD_ENCODINGS))),
)

_STOCK = (
    TensorSpec("stock", "INT32", (1,), value_range=(0, INT32_MAX)),
    TensorSpec("low_stock_threshold", "INT32", (1,), optional=True, value_range=(1, INT32_MAX)),
    _text("restock_date", optional=True, max_bytes=10),
)

INVENTORY_IMAGE = Contract(
    name="inventory_image",
    description=(
        "A product image with its live stock state: in stock, low stock with the count, sold out "
        "(desaturated) or back-order with the date. Encoded, labelled as AI-generated."
    ),
    inputs=(*_product_choice(), *_STOCK, _text("encoding", optional=True, max_bytes=8)),
    outputs=(
        TensorSpec(
            "image", "BYTES", (1,), max_bytes=encoded_max_bytes(INVENTORY_MAX_SIDE, INVENTORY_MAX_SIDE)
        ),
    ),
    max_batch_size=0,
    class_names=PRODUCT_CLASSES,
)

INVENTORY_SHEET = Contract(
    name="inventory_sheet",
    description="A contact sheet of up to 64 SKUs with colour-coded stock states, for warehouse dashboards.",
    inputs=(
        *_product_choice(rows=True),
        _text("sku", max_bytes=128, rows=True, example="SKU-1042"),
        TensorSpec("stock", "INT32", (-1,), value_range=(0, INT32_MAX), max_dims=(MAX_SKUS,)),
        TensorSpec(
            "low_stock_threshold",
            "INT32",
            (-1,),
            optional=True,
            value_range=(1, INT32_MAX),
            max_dims=(MAX_SKUS,),
        ),
        _text("restock_date", optional=True, max_bytes=10, rows=True),
        _text("title", optional=True, max_bytes=256),
        _text("encoding", optional=True, max_bytes=8),
    ),
    outputs=(TensorSpec("sheet", "BYTES", (1,), max_bytes=encoded_max_bytes(*SHEET_MAX_HW)),),
    max_batch_size=0,
    class_names=PRODUCT_CLASSES,
)

# --- the product studio: cut-outs, white main images and scenes from a shop's own photo ---------

CUTOUT_MIN_SIDE, CUTOUT_MAX_SIDE = 16, 2048
# Marketplace sizes beside the ad formats: Amazon zoom (>= 1000 px, 2000 common), Shopify's 2048.
STUDIO_FORMATS = (*AD_FORMATS, "2000x2000", "2048x2048")
STUDIO_MAX_HW = (2048, 2048)
MAX_SCENE_VARIANTS = 8

PRODUCT_CUTOUT = Contract(
    name="product_cutout",
    description=(
        "A soft alpha matte of the product in a photo (salient-object matting, refined at full size): "
        "uint8 0 (background) to 255 (product), at the photo's own size. Requests of the same size "
        "batch together."
    ),
    inputs=(
        TensorSpec(
            "image",
            "UINT8",
            (-1, -1, 3),
            min_dims=(CUTOUT_MIN_SIDE, CUTOUT_MIN_SIDE, 3),
            max_dims=(CUTOUT_MAX_SIDE, CUTOUT_MAX_SIDE, 3),
        ),
    ),
    outputs=(TensorSpec("alpha", "UINT8", (-1, -1), max_dims=(CUTOUT_MAX_SIDE, CUTOUT_MAX_SIDE)),),
    max_batch_size=8,
)

PRODUCT_SCENE = Contract(
    name="product_scene",
    description=(
        "Publishable product images from a shop's own photo (or a generated product): the cut-out "
        "placed in a scene from the library (or `auto` by article type), or `white` for the "
        "marketplace main image (pure white, product filling 85% of the frame). The product's pixels "
        "stay the photo's (x4 super-resolution when it must be enlarged more than 2x). Encoded, "
        "labelled as AI-generated (a composite when the product is a real photo)."
    ),
    inputs=(
        *_product_choice(),
        _text("scene", max_bytes=64, example="white"),
        _text("format", max_bytes=16, example="2000x2000"),
        TensorSpec("variants", "INT32", (1,), value_range=(1, MAX_SCENE_VARIANTS), example="1"),
        _text("encoding", optional=True, max_bytes=8),
    ),
    outputs=(
        TensorSpec(
            "images",
            "BYTES",
            (-1,),
            max_dims=(MAX_SCENE_VARIANTS,),
            max_bytes=encoded_max_bytes(*STUDIO_MAX_HW),
        ),
    ),
    max_batch_size=0,
    class_names=PRODUCT_CLASSES,
    parameters=(("formats", json.dumps(STUDIO_FORMATS)), ("encodings", json.dumps(AD_ENCODINGS))),
)

CONTRACTS: dict[str, Contract] = {
    c.name: c
    for c in (
        PRODUCT_GAN,
        TRYON,
        TRYON_BYTES,
        UPSCALE,
        PRODUCT_DETAIL,
        PERSONALIZE,
        AD_CREATIVE,
        INVENTORY_IMAGE,
        INVENTORY_SHEET,
        PRODUCT_CUTOUT,
        PRODUCT_SCENE,
    )
}
