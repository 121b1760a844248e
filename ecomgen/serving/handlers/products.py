"""Where a request's product image comes from, for the models that lay products out (ads, stock
images, studio scenes): an uploaded photo, decoded once and cut out by the matting network, or a
generated one (product_gan's generator, then x4 super-resolution). Only the networks the route
needs run; a step calls them through ``Step.networks`` (in its process on CPU, BLS on GPU).

The step's parameters name the networks (``generator``, ``upscaler``, ``matting``) and give their
shapes and tensor names (``latent_dim``, ``num_classes``, ``matting_hw``, ``matting_io``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ecomgen.creative.images import as_bytes, decode
from ecomgen.creative.matte import refine_alpha
from ecomgen.creative.studio import ALPHA_THRESHOLD
from ecomgen.errors import RequestError
from ecomgen.numerics import from_uint8_hwc, latents_from_seeds, one_hot, to_uint8_hwc
from ecomgen.serving.step import Step
from ecomgen_client.contracts import PRODUCT_CLASSES, SR_MAX_SIDE, SR_MIN_SIDE

INT64_MAX = 2**63 - 1
PHOTO_MIN_SIDE, PHOTO_MAX_SIDE = 32, 4096
# x4 super-resolution only when plain resampling would enlarge the product more than this.
SR_ABOVE = 2.0
# An uploaded RGBA photo's own alpha is used when it really cuts something out.
OWN_ALPHA_MIN_TRANSPARENT = 0.01
EMPTY_CUTOUT = "product: no product found in the photo (the cut-out is empty)"


@dataclass
class Product:
    """One product image: uint8 HxWx3 pixels, its matte (uint8 HxW, 255 = product) and where it came
    from (an upload is a real photo: its outputs are composites)."""

    rgb: np.ndarray
    alpha: np.ndarray | None
    uploaded: bool
    article: str = "unknown"


def choice(arrays: dict[str, np.ndarray]) -> str:
    """ "upload" or "generate": exactly one way to give the product, or a RequestError saying so."""
    upload = "product" in arrays
    generate = "class_id" in arrays or "seed" in arrays
    if upload and generate:
        raise RequestError(
            "send either product (a photo) or class_id and seed (a generated product), not both"
        )
    if upload:
        return "upload"
    if "class_id" in arrays and "seed" in arrays:
        return "generate"
    raise RequestError("product: send class_id and seed, or an uploaded product photo")


def decode_uploads(arrays: dict[str, np.ndarray], keep_alpha: bool = False) -> list[np.ndarray]:
    """The request's ``product`` photos (JPEG/PNG/WebP), decoded once, checked."""
    values: list[object] = list(arrays["product"].reshape(-1)) if "product" in arrays else []
    return [decode("product", as_bytes(v), PHOTO_MIN_SIDE, PHOTO_MAX_SIDE, keep_alpha) for v in values]


def seeds_for(arrays: dict[str, np.ndarray], rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Classes and seeds of ``rows`` generated products: ``seed, seed+1, ...`` for one class."""
    classes, seeds = arrays["class_id"].reshape(-1), arrays["seed"].reshape(-1)
    if classes.size != seeds.size:
        raise RequestError(f"class_id has {classes.size} values for {seeds.size} seeds")
    if classes.size == 1 and rows > 1:
        seed = int(seeds[0])
        if seed > INT64_MAX - rows:
            raise RequestError(
                f"seed: {seed} leaves no room for {rows} variants (at most {INT64_MAX - rows})"
            )
        classes, seeds = np.repeat(classes, rows), seed + np.arange(rows, dtype=np.int64)
    return classes.astype(np.int64), seeds.astype(np.int64)


class Products:
    """The networks behind product images, for one step."""

    def __init__(self, step: Step) -> None:
        p = step.params
        self.step = step
        self.generator = p.get("generator", "")
        self.upscaler = p.get("upscaler", "")
        self.matting = p.get("matting", "")
        self.latent_dim = int(p.get("latent_dim", "0"))
        self.num_classes = int(p.get("num_classes", "0"))
        self.matting_hw = tuple(json.loads(p.get("matting_hw", "[256, 256]")))
        self.matting_io = tuple(json.loads(p.get("matting_io", '["resized", "matte"]')))

    def generate(self, classes: np.ndarray, seeds: np.ndarray, upscale: bool = True) -> list[Product]:
        """Generated products for (class, seed) rows: 64x48, or 256x192 after the x4 network."""
        run = self.step.networks.run
        out = run(
            self.generator,
            {
                "z": latents_from_seeds(seeds, self.latent_dim),
                "class_onehot": one_hot(classes, self.num_classes),
            },
            self.step.deadline_ns,
        )
        images = out["image"]
        if upscale and self.upscaler:
            images = run(self.upscaler, {"lowres": images}, self.step.deadline_ns)["highres"]
        return [
            Product(rgb, None, uploaded=False, article=PRODUCT_CLASSES[int(c)])
            for rgb, c in zip(to_uint8_hwc(images), classes, strict=True)
        ]

    def matte(self, rgb: np.ndarray) -> np.ndarray:
        """The product's soft matte at the photo's size: the network at its fixed size, then the
        edges refined against the full-size photo (guided filter)."""
        return self.mattes([rgb])[0]

    def mattes(self, images: list[np.ndarray]) -> list[np.ndarray]:
        h, w = self.matting_hw
        batch = np.stack([from_uint8_hwc(resize(img, w, h)) for img in images])
        name_in, name_out = self.matting_io
        low = self.step.networks.run(self.matting, {name_in: batch}, self.step.deadline_ns)[name_out]
        return [refine_alpha(img, low[i, 0]) for i, img in enumerate(images)]

    def with_matte(self, product: Product) -> Product:
        """The product with its matte; a matte with nothing in it is the caller's photo's problem
        (INVALID_ARGUMENT), not a failure of the composition after it."""
        if product.alpha is None:
            product.alpha = self.matte(product.rgb)
        if not np.any(product.alpha >= ALPHA_THRESHOLD):
            raise RequestError(EMPTY_CUTOUT)
        return product

    def enlarge(self, product: Product, factor: float) -> Product:
        """x4 super-resolution of the product (cropped to its matte) when plain resampling would
        enlarge it more than ``SR_ABOVE`` times; otherwise it is returned as it is."""
        if factor <= SR_ABOVE or not self.upscaler or product.alpha is None:
            return product
        rgb, alpha = crop_to_matte(product.rgb, product.alpha, margin=0.04)
        # Shrink the crop to what the frame needs after x4 (the network's cost grows with its input's
        # area): a product that must grow 2.5x is fed at 2.5/4 of its size, not at the contract's 512.
        side = max(rgb.shape[:2])
        scale = min(1.0, SR_MAX_SIDE / side, math.ceil(side * factor / 4) / side)
        if min(rgb.shape[:2]) * scale < SR_MIN_SIDE:
            return product
        if scale < 1.0:
            rgb = resize(rgb, round(rgb.shape[1] * scale), round(rgb.shape[0] * scale))
        big = self.step.networks.run(
            self.upscaler, {"lowres": from_uint8_hwc(rgb)[None]}, self.step.deadline_ns
        )
        up = to_uint8_hwc(big["highres"])[0]
        alpha_up = cv2.resize(alpha, (up.shape[1], up.shape[0]), interpolation=cv2.INTER_CUBIC)
        return Product(
            up, refine_alpha(up, alpha_up.astype(np.float32) / 255.0), product.uploaded, product.article
        )


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """High-quality resampling: area averaging to shrink, Lanczos to enlarge."""
    h, w = image.shape[:2]
    interp = cv2.INTER_AREA if width * height < w * h else cv2.INTER_LANCZOS4
    return np.ascontiguousarray(cv2.resize(image, (width, height), interpolation=interp))


def crop_to_matte(rgb: np.ndarray, alpha: np.ndarray, margin: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The photo and matte cropped to the matte's bounding box (alpha >= 8), plus a margin."""
    ys, xs = np.nonzero(alpha >= ALPHA_THRESHOLD)
    if ys.size == 0:
        raise RequestError(EMPTY_CUTOUT)
    h, w = alpha.shape
    my, mx = round(margin * (ys.max() - ys.min() + 1)), round(margin * (xs.max() - xs.min() + 1))
    top, bottom = max(0, ys.min() - my), min(h, ys.max() + 1 + my)
    left, right = max(0, xs.min() - mx), min(w, xs.max() + 1 + mx)
    return rgb[top:bottom, left:right], alpha[top:bottom, left:right]


def own_alpha(pixels: np.ndarray) -> np.ndarray | None:
    """An RGBA upload's alpha when it cuts something out (some pixels transparent), else None."""
    if pixels.shape[2] != 4:
        return None
    alpha = pixels[..., 3]
    return alpha if float(np.mean(alpha < 128)) >= OWN_ALPHA_MIN_TRANSPARENT else None
