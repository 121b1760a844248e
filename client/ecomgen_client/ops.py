"""Typed operations behind the client's convenience methods, defined once for sync and async.

Each function validates its arguments, builds the model inputs and returns a
:class:`~ecomgen_client._common.Call` whose ``finish`` turns the outputs into what the
caller asked for (PIL in -> PIL out, numpy in -> numpy out).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from . import _images
from ._common import Array, Call
from .contracts import (
    AD_CREATIVE,
    INVENTORY_IMAGE,
    INVENTORY_SHEET,
    PERSONALIZE,
    PRODUCT_CUTOUT,
    PRODUCT_DETAIL,
    PRODUCT_GAN,
    PRODUCT_SCENE,
    TRYON,
    UPSCALE,
    Contract,
    TensorSpec,
)
from .errors import InvalidInputError

Seeds = Sequence[int] | Array
ImageLike = Any  # a PIL.Image.Image or an [H, W, 3] uint8 array


def is_pil(image: object) -> bool:
    return hasattr(image, "convert") and hasattr(image, "size") and not isinstance(image, np.ndarray)


def image_array(model: Contract, tensor: TensorSpec, image: ImageLike) -> npt.NDArray[np.uint8]:
    """A PIL image or [H, W, 3] uint8 array, checked against the tensor's bounds."""
    arr = np.asarray(image.convert("RGB")) if is_pil(image) else image
    if not isinstance(arr, np.ndarray):
        raise InvalidInputError(f"{model.name}: {tensor.name} must be a PIL image or a numpy array")
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InvalidInputError(
            f"{model.name}: {tensor.name} has shape {list(arr.shape)}, expected [height, width, 3]"
        )
    if arr.dtype != np.uint8:
        raise InvalidInputError(f"{model.name}: {tensor.name} has dtype {arr.dtype}, expected uint8")
    lo, hi = tensor.min_dims or (1, 1, 3), tensor.max_dims or (1 << 30, 1 << 30, 3)
    h, w = arr.shape[:2]
    if not (lo[0] <= h <= hi[0] and lo[1] <= w <= hi[1]):
        raise InvalidInputError(
            f"{model.name}: {tensor.name} is {h}x{w} pixels; each side must be in [{lo[0]}, {hi[0]}]"
        )
    return arr


def as_returned(image: npt.NDArray[np.uint8], like: object) -> Any:
    """PIL in -> PIL out; numpy in -> numpy out."""
    return _images.to_pil(image[None])[0] if is_pil(like) else image


def class_and_seed_inputs(model: Contract, cls: int | str, seeds: Seeds) -> dict[str, Array]:
    """A class (name or id) and seeds -> the batched ``class_id`` / ``seed`` inputs."""
    if isinstance(cls, bool) or not isinstance(cls, int | str | np.integer):
        raise InvalidInputError(f"class must be a name or an int id, got {type(cls).__name__}")
    try:
        class_id = model.class_id(cls if isinstance(cls, str) else int(cls))
    except ValueError as exc:
        raise InvalidInputError(f"{model.name}: {exc}") from None
    seed_spec = model.input("seed")
    try:
        raw = np.asarray(seeds)
    except (OverflowError, ValueError) as exc:
        raise InvalidInputError(f"{model.name}: seeds are not integers: {exc}") from None
    if raw.ndim != 1:
        raise InvalidInputError(f"{model.name}: seeds must be a flat sequence, got shape {list(raw.shape)}")
    if raw.size == 0:
        raise InvalidInputError(f"{model.name}: no seeds given")
    if raw.dtype.kind not in "iu":
        # Includes object arrays, which is what numpy makes of ints beyond 64 bits.
        raise InvalidInputError(f"{model.name}: seeds must be integers, got dtype {raw.dtype}")
    lo, hi = seed_spec.value_range or (0, 2**63 - 1)
    if int(raw.min()) < lo or int(raw.max()) > hi:
        bad = int(raw.min()) if int(raw.min()) < lo else int(raw.max())
        raise InvalidInputError(f"{model.name}: input 'seed' value {bad} out of range [{lo:g}, {hi:g}]")
    n = raw.shape[0]
    class_spec = model.input("class_id")
    return {
        "class_id": np.full(class_spec.batched_shape(n), class_id, dtype=class_spec.numpy_dtype),
        "seed": raw.astype(seed_spec.numpy_dtype).reshape(seed_spec.batched_shape(n)),
    }


def _image(out: dict[str, Array]) -> Array:
    return out["image"]


def products(cls: int | str, seeds: Seeds, model: Contract = PRODUCT_GAN) -> Call[npt.NDArray[np.uint8]]:
    """One image per seed of class ``cls``: uint8 [N, H, W, 3]."""
    return Call(model, class_and_seed_inputs(model, cls, seeds), _image)


def product_detail(cls: int | str, seeds: Seeds) -> Call[npt.NDArray[np.uint8]]:
    """product_gan's image for each seed, upscaled x4: uint8 [N, 256, 192, 3]."""
    return Call(PRODUCT_DETAIL, class_and_seed_inputs(PRODUCT_DETAIL, cls, seeds), _image)


def upscale(image: ImageLike) -> Call[Any]:
    """x4 super-resolution of one image (PIL or [H, W, 3] uint8, 16-512 px a side), or of a
    batch of same-size images ([N, H, W, 3] uint8); returns the same kind it was given."""
    tensor = UPSCALE.input("image")
    if isinstance(image, np.ndarray) and image.ndim == 4:
        batch = np.stack([image_array(UPSCALE, tensor, im) for im in image]) if len(image) else image
        if len(batch) == 0:
            raise InvalidInputError("upscale: no images given")
        return Call(UPSCALE, {"image": batch}, lambda out: out["upscaled"])
    arr = image_array(UPSCALE, tensor, image)
    return Call(UPSCALE, {"image": arr[None]}, lambda out: as_returned(out["upscaled"][0], image))


@dataclass(frozen=True)
class Personalized:
    """New product images for one shopper, and the nearest catalogue items to each (ids, nearest first)."""

    images: npt.NDArray[np.uint8]  # [count, 64, 48, 3]
    similar: npt.NDArray[np.int64]  # [count, 4]; -1 where the server has no catalogue index


def _history(images: Sequence[ImageLike] | Array) -> Array:
    """Browsed photos -> one [N, H, W, 3] uint8 array. Photos of different sizes are fitted to the
    largest's size (white padding; needs Pillow): the server fits every photo to 64x48 anyway."""
    tensor = PERSONALIZE.input("history")
    if isinstance(images, np.ndarray) and images.ndim == 4:
        frames = list(images)
    else:
        frames = [np.asarray(im.convert("RGB")) if is_pil(im) else im for im in images]
    if not frames:
        raise InvalidInputError("personalize: empty history, at least one image is required")
    if any(
        not isinstance(f, np.ndarray) or f.ndim != 3 or f.shape[2] != 3 or f.dtype != np.uint8 for f in frames
    ):
        raise InvalidInputError("personalize: every history image must be RGB [H, W, 3] uint8 or a PIL image")
    h, w = max(f.shape[0] for f in frames), max(f.shape[1] for f in frames)
    if any(f.shape[:2] != (h, w) for f in frames):
        frames = [_images.fit(f, h, w) for f in frames]
    batch = np.stack(frames)
    lo, hi = tensor.min_dims or (1, 1, 1, 3), tensor.max_dims or batch.shape
    for i, (size, a, b) in enumerate(zip(batch.shape[:3], lo[:3], hi[:3], strict=True)):
        if not a <= size <= b:
            what = ("images", "pixels high", "pixels wide")[i]
            raise InvalidInputError(f"personalize: history has {size} {what}; allowed [{a}, {b}]")
    return batch


def personalize(
    history: Sequence[ImageLike] | Array,
    count: int,
    seed: int,
    weights: Sequence[float] | Array | None = None,
) -> Call[Personalized]:
    """``count`` new product images in the style region of ``history`` (1-32 browsed photos).

    ``weights``: recency or dwell time per photo (non-negative), default uniform. The same
    history, weights and seed give the same images.
    """
    inputs: dict[str, Array] = {
        "history": _history(history),
        "seed": np.array([seed], dtype=np.int64),
        "count": np.array([count], dtype=np.int32),
    }
    if weights is not None:
        inputs["weights"] = np.asarray(weights, dtype=np.float32).reshape(-1)
    return Call(PERSONALIZE, inputs, lambda out: Personalized(out["image"], out["similar"]))


def _bytes(values: Sequence[str | bytes | None]) -> Array:
    return np.array([v.encode() if isinstance(v, str) else v for v in values], dtype=np.object_)


def _product(
    model: Contract, class_id: int | str | None, seed: int, product: bytes | None
) -> dict[str, Array]:
    """The product of an ad or inventory request: a generated one (class, seed) or an uploaded photo."""
    if product is not None:
        if not isinstance(product, bytes | bytearray) or not product:
            raise InvalidInputError(f"{model.name}: product must be the bytes of a JPEG/PNG/WebP photo")
        return {"product": _bytes([bytes(product)])}
    if class_id is None:
        raise InvalidInputError(f"{model.name}: give class_id (and seed), or an uploaded product photo")
    # One request is one product: the model has no batch axis, so the [1, 1] rows become [1].
    return {k: v.reshape(-1) for k, v in class_and_seed_inputs(model, class_id, [seed]).items()}


def ad_creatives(
    title: str,
    price: str,
    currency: str,
    *,
    class_id: int | str | None = None,
    seed: int = 0,
    product: bytes | None = None,
    variants: int = 4,
    format: str = "1080x1080",
    badge: str | None = None,
    cta: str | None = None,
    brand_colour: str | None = None,
    encoding: str = "jpeg",
) -> Call[list[bytes]]:
    """``variants`` ad creatives (encoded, labelled as AI-generated): one product, several layouts.

    The product is generated (``class_id``, seeds ``seed``, ``seed+1``, ...) or ``product``, the
    bytes of an uploaded photo. ``format``: 1080x1080, 1080x1350, 1200x628 or 1080x1920.
    """
    inputs = _product(AD_CREATIVE, class_id, seed, product)
    inputs["variants"] = np.array([variants], dtype=np.int32)
    text = {"title": title, "price": price, "currency": currency, "format": format, "encoding": encoding}
    text |= {
        k: v for k, v in (("badge", badge), ("cta", cta), ("brand_colour", brand_colour)) if v is not None
    }
    inputs |= {k: _bytes([v]) for k, v in text.items()}
    return Call(AD_CREATIVE, inputs, lambda out: [bytes(b) for b in out["images"]])


def inventory_image(
    stock: int,
    *,
    class_id: int | str | None = None,
    seed: int = 0,
    product: bytes | None = None,
    low_stock_threshold: int | None = None,
    restock_date: str | None = None,
    encoding: str = "png",
) -> Call[bytes]:
    """The product image with its stock state (in stock, only N left, sold out, back on a date)."""
    inputs = _product(INVENTORY_IMAGE, class_id, seed, product)
    inputs["stock"] = np.array([stock], dtype=np.int32)
    if low_stock_threshold is not None:
        inputs["low_stock_threshold"] = np.array([low_stock_threshold], dtype=np.int32)
    if restock_date is not None:
        inputs["restock_date"] = _bytes([restock_date])
    inputs["encoding"] = _bytes([encoding])
    return Call(INVENTORY_IMAGE, inputs, lambda out: bytes(out["image"][0]))


@dataclass(frozen=True)
class SheetItem:
    """One SKU of an inventory sheet (generated product by class and seed)."""

    sku: str
    stock: int
    class_id: int | str
    seed: int = 0
    low_stock_threshold: int | None = None
    restock_date: str | None = None


def inventory_sheet(
    items: Sequence[SheetItem], *, title: str | None = None, encoding: str = "png"
) -> Call[bytes]:
    """One contact sheet of up to 64 SKUs with colour-coded stock states."""
    if not items:
        raise InvalidInputError("inventory_sheet: no SKUs given")
    model = INVENTORY_SHEET
    classes = [model.class_id(i.class_id) if isinstance(i.class_id, str) else int(i.class_id) for i in items]
    inputs: dict[str, Array] = {
        "class_id": np.array(classes, dtype=np.int32),
        "seed": np.array([i.seed for i in items], dtype=np.int64),
        "sku": _bytes([i.sku for i in items]),
        "stock": np.array([i.stock for i in items], dtype=np.int32),
        "encoding": _bytes([encoding]),
    }
    if any(i.low_stock_threshold is not None for i in items):
        inputs["low_stock_threshold"] = np.array([i.low_stock_threshold or 5 for i in items], dtype=np.int32)
    if any(i.restock_date for i in items):
        inputs["restock_date"] = _bytes([i.restock_date or "" for i in items])
    if title is not None:
        inputs["title"] = _bytes([title])
    return Call(model, inputs, lambda out: bytes(out["sheet"][0]))


@dataclass(frozen=True)
class TryOnResult:
    """A try-on with its debug outputs: uint8 [H, W, 3] images and the [H, W] composition mask."""

    image: npt.NDArray[np.uint8]
    warped_garment: npt.NDArray[np.uint8]
    mask: npt.NDArray[np.uint8]


def _pair(person: ImageLike, garment: ImageLike) -> dict[str, Array]:
    return {
        name: image_array(TRYON, TRYON.input(name), image)[None]
        for name, image in (("person", person), ("garment", garment))
    }


def try_on(person: ImageLike, garment: ImageLike) -> Call[Any]:
    """``person`` wearing ``garment`` at 256x192, as a PIL image or uint8 array like ``person``."""
    return Call(TRYON, _pair(person, garment), lambda out: as_returned(out["image"][0], person), ("image",))


def try_on_debug(person: ImageLike, garment: ImageLike) -> Call[TryOnResult]:
    """The try-on plus the warped garment and the composition mask, as uint8 arrays."""

    def finish(out: dict[str, Array]) -> TryOnResult:
        return TryOnResult(out["image"][0], out["warped_garment"][0], out["mask"][0])

    return Call(TRYON, _pair(person, garment), finish, ("image", "warped_garment", "mask"))


def class_names(config: dict[str, Any], fallback: Sequence[str]) -> tuple[str, ...]:
    """The class names a served model reports in its config (``class_names``), else ``fallback``."""
    names = Contract.from_config(config).class_names
    return names or tuple(fallback)


def scene_names(config: dict[str, Any]) -> tuple[str, ...]:
    """The scene library a served ``product_scene`` lists in its config parameter ``scenes`` (a JSON
    list of names); () when it lists none, and then the server alone validates a scene name."""
    cfg = config.get("config", config)
    raw = cfg.get("parameters", {}).get("scenes", {}).get("string_value", "")
    try:
        names = json.loads(raw) if raw else []
    except ValueError:
        return ()
    if isinstance(names, list) and all(isinstance(n, str) for n in names):
        return tuple(names)
    return ()


def latest_version(metadata: dict[str, Any]) -> str | None:
    """The newest version a model's metadata lists (Triton serves the latest by default)."""
    versions = [str(v) for v in metadata.get("versions", [])]
    if not versions:
        return None
    return max(versions, key=lambda v: (v.isdigit(), int(v) if v.isdigit() else 0, v))


# --- the product studio: cut-outs, white main images and scenes --------------------------------------

PhotoLike = Any  # a path (str or os.PathLike), encoded bytes, a PIL image or an [H, W, 3] uint8 array


def choices(model: Contract, parameter: str) -> tuple[str, ...]:
    """A list of allowed values a contract carries in its ``parameters`` (``formats``, ``encodings``)."""
    raw = dict(model.parameters).get(parameter)
    return tuple(json.loads(raw)) if raw else ()


def check_choice(model: Contract, parameter: str, value: object, what: str) -> str:
    """``value`` (normalised: trimmed, lower case, ``jpg`` = ``jpeg``) if the contract allows it."""
    allowed = choices(model, parameter)
    text = value.strip().lower() if isinstance(value, str) else value
    text = "jpeg" if text == "jpg" else text
    if not isinstance(text, str) or (allowed and text not in allowed):
        raise InvalidInputError(f"{model.name}: {what} {value!r} is not one of {', '.join(allowed)}")
    return text


def _cutout_frame(image: ImageLike) -> npt.NDArray[np.uint8]:
    """One photo as [H, W, 3] uint8 at its own size: any size from 16 px a side up."""
    tensor = PRODUCT_CUTOUT.input("image")
    return image_array(PRODUCT_CUTOUT, replace(tensor, max_dims=None), image)


def _fit_side(frame: npt.NDArray[np.uint8], max_side: int) -> npt.NDArray[np.uint8]:
    """Shrink (Lanczos, keeping the aspect ratio) so that the longer side is at most ``max_side``."""
    h, w = frame.shape[:2]
    if max(h, w) <= max_side:
        return frame
    scale = max_side / max(h, w)
    small = _images.resize(frame, max(1, round(h * scale)), max(1, round(w * scale)))
    return image_array(PRODUCT_CUTOUT, PRODUCT_CUTOUT.input("image"), small)


def cutout(image: ImageLike | Sequence[ImageLike], *, rgba: bool = False) -> Call[Any]:
    """The product's alpha matte (``product_cutout``), at the photo's own size.

    ``image``: a PIL image or [H, W, 3] uint8 array (returns a PIL "L" image or an [H, W] uint8
    array); an [N, H, W, 3] array of same-size photos (returns [N, H, W]); or a list of same-size
    photos (returns a list, each like its photo). With ``rgba`` the photo itself comes back with the
    matte as its alpha: PIL "RGBA", or [H, W, 4] / [N, H, W, 4] arrays.

    A photo larger than 2048 px a side is shrunk here (Lanczos, aspect kept) for the model, and its
    matte enlarged back (bilinear) to the photo's size; this needs Pillow. Below 16 px a side it is
    refused (InvalidInputError).
    """
    many = isinstance(image, list | tuple) or (isinstance(image, np.ndarray) and image.ndim == 4)
    items: list[Any] = list(image) if many else [image]
    if not items:
        raise InvalidInputError("product_cutout: no images given")
    frames = [_cutout_frame(im) for im in items]
    sizes = sorted({f.shape[:2] for f in frames})
    if len(sizes) > 1:
        raise InvalidInputError(f"product_cutout: one request takes photos of one size, got {sizes}")
    (h, w), max_side = sizes[0], (PRODUCT_CUTOUT.input("image").max_dims or (2048, 2048))[0]
    sent = np.stack([_fit_side(f, max_side) for f in frames])

    def finish(out: dict[str, Array]) -> Any:
        alphas = list(out["alpha"])
        if alphas[0].shape != (h, w):
            alphas = [_images.resize(a, h, w, smooth=True) for a in alphas]
        results = [np.dstack([f, a]) if rgba else a for f, a in zip(frames, alphas, strict=True)]
        if isinstance(image, np.ndarray) and image.ndim == 4:
            return np.stack(results)
        shaped = [
            _images.to_pil(r[None])[0] if is_pil(like) else r for r, like in zip(results, items, strict=True)
        ]
        return shaped if many else shaped[0]

    return Call(PRODUCT_CUTOUT, {"image": sent}, finish)


def product_bytes(model: Contract, product: PhotoLike) -> bytes:
    """An uploaded product photo as the encoded bytes the server takes (as given, at most 16 MiB).

    A path is read as it is; bytes are sent as they are; a PIL image or an array is encoded as PNG
    (lossless; needs Pillow).
    """
    if isinstance(product, str | os.PathLike):
        try:
            data = Path(product).read_bytes()
        except OSError as exc:
            raise InvalidInputError(
                f"{model.name}: cannot read the product photo {product}: {exc.strerror}"
            ) from None
    elif isinstance(product, bytes | bytearray | memoryview):
        data = bytes(product)
    elif is_pil(product):
        data = _images.encode_lossless(product)
    elif isinstance(product, np.ndarray):
        data = _images.encode_lossless(image_array(model, model.input("product"), product))
    else:
        raise InvalidInputError(
            f"{model.name}: product must be a path, encoded bytes, a PIL image or an array, "
            f"got {type(product).__name__}"
        )
    limit = model.input("product").max_bytes
    if not data:
        raise InvalidInputError(f"{model.name}: the product photo is empty (0 bytes)")
    if limit and len(data) > limit:
        raise InvalidInputError(
            f"{model.name}: the product photo is {len(data):,} bytes; "
            f"the limit is {limit:,} ({limit >> 20} MiB)"
        )
    return data


def product_scene(
    product: PhotoLike | None = None,
    *,
    class_id: int | str | None = None,
    seed: int = 0,
    scene: str = "white",
    format: str = "2000x2000",
    variants: int = 1,
    encoding: str = "png",
) -> Call[list[bytes]]:
    """``variants`` publishable images of one product (``product_scene``): encoded, labelled.

    The product is ``product`` (a photo: path, bytes, PIL image or array; see :func:`product_bytes`)
    or a generated one (``class_id`` and ``seed``). ``scene``: ``"white"`` (the marketplace main
    image), ``"auto"`` (chosen by article type) or a library name (the server checks it).
    ``format``: an ad format, ``2000x2000`` or ``2048x2048``; ``encoding``: png, jpeg or webp.
    """
    model = PRODUCT_SCENE
    if not isinstance(scene, str) or not scene.strip():
        raise InvalidInputError(f"{model.name}: scene must be 'white', 'auto' or a scene name, got {scene!r}")
    fmt = check_choice(model, "formats", format, "format")
    enc = check_choice(model, "encodings", encoding, "encoding")
    if isinstance(variants, bool) or not isinstance(variants, int | np.integer):
        raise InvalidInputError(f"{model.name}: variants must be an int, got {variants!r}")
    photo = None if product is None else product_bytes(model, product)
    inputs = _product(model, class_id, seed, photo)
    inputs["variants"] = np.array([variants], dtype=np.int32)
    inputs |= {k: _bytes([v]) for k, v in (("scene", scene.strip()), ("format", fmt), ("encoding", enc))}
    return Call(model, inputs, lambda out: [bytes(b) for b in out["images"]])


def white_main_image(
    product: PhotoLike | None = None,
    *,
    class_id: int | str | None = None,
    seed: int = 0,
    format: str = "2000x2000",
    encoding: str = "png",
) -> Call[bytes]:
    """The marketplace main image: the product on pure white, filling 85% of the frame (one image)."""
    call = product_scene(
        product, class_id=class_id, seed=seed, scene="white", format=format, variants=1, encoding=encoding
    )
    return Call(call.model, call.inputs, lambda out: bytes(out["images"][0]))
