"""The product studio: ``product_cutout`` (a photo's matte at its own size) and ``product_scene``
(publishable images from a shop's photo or a generated product: the marketplace white main image,
or the cut-out placed in a scene of the library).

``product_cutout`` is an ensemble: :class:`CutoutPre` stretches each photo to the network's fixed
size, the matting network runs, :class:`CutoutPost` refines the matte's edges against the full-size
photo. Same-size requests batch in the Python steps; the network batches them all.

``product_scene`` is one step (:class:`Scene`): it checks the request once, takes the product from
its route (``products.py``), enlarges it with the x4 network only when plain resampling would
enlarge it more than twice, composes each variant (``ecomgen.creative.studio``) and encodes it
labelled: a composite of a real photo, or a fully generated image.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from ecomgen.creative import studio
from ecomgen.creative.matte import refine_alpha
from ecomgen.errors import RequestError
from ecomgen.numerics import from_uint8_hwc
from ecomgen.serving.handlers.ads import (
    CHECKED,
    ProductStep,
    checked,
    encoding,
    field,
    object_array,
    scalar,
    source_type,
)
from ecomgen.serving.handlers.labelled import labelled
from ecomgen.serving.handlers.products import Product, choice, decode_uploads, resize
from ecomgen.serving.step import Step


class CutoutPre(Step):
    """uint8 photos (any size, same size within a batch) -> the network's input at its fixed size."""

    def setup(self) -> None:
        self.hw = tuple(json.loads(self.params["matting_hw"]))

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        h, w = self.hw
        return {"resized": np.stack([from_uint8_hwc(resize(img, w, h)) for img in batch["image"]])}


class CutoutPost(Step):
    """The network's matte -> uint8 at each photo's size, edges refined against the photo."""

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        alphas = [refine_alpha(img, low[0]) for img, low in zip(batch["image"], batch["matte"], strict=True)]
        return {"alpha": np.stack(alphas)}


@dataclass
class SceneRequest:
    scene: str  # "white", "auto" or a library name
    width: int
    height: int
    variants: int
    encoding: str


def scene_request(arrays: dict[str, np.ndarray], formats: list[str]) -> SceneRequest:
    fmt = (field(arrays, "format") or b"").decode("utf-8", "replace").strip().lower()
    if fmt not in formats:
        raise RequestError(f"format: {fmt!r} is not one of {', '.join(formats)}")
    width, height = (int(v) for v in fmt.split("x"))
    scene = (field(arrays, "scene") or b"").decode("utf-8", "replace").strip()
    if scene not in ("white", "auto", *studio.SCENE_NAMES):
        raise RequestError(
            f"scene: {scene!r} is not 'white', 'auto' or one of {', '.join(studio.SCENE_NAMES)}"
        )
    return SceneRequest(scene, width, height, scalar(arrays, "variants") or 1, encoding(arrays, "png"))


class Scene(ProductStep):
    """``variants`` studio images of one product."""

    def setup(self) -> None:
        super().setup()
        self.formats = json.loads(self.params["formats"])

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req = scene_request(arrays, self.formats)
        if choice(arrays) == "upload":
            arrays = {**arrays, "product": object_array(decode_uploads(arrays, keep_alpha=True))}
        return checked(arrays, req)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        req: SceneRequest = batch[CHECKED][0]
        (product,) = self.uploads_or_generated(batch, 1, upscale=True)
        product = self.products.with_matte(product)  # a generated product is cut out too
        product = self.products.enlarge(product, self.enlargement(product, req))
        assert product.alpha is not None
        made = [self.compose(product, req, v) for v in range(req.variants)]
        source = source_type(product.uploaded)
        white = req.scene == "white"  # the marketplace rule: a pure RGB 255 background
        labels = [
            labelled(img, req.encoding, source, credit=credit, keep_white=white) for img, credit in made
        ]
        return {"images": np.array(labels, dtype=np.object_)}

    def enlargement(self, product: Product, req: SceneRequest) -> float:
        """How much plain resampling would enlarge the product to its size in the frame."""
        assert product.alpha is not None
        x0, y0, x1, y1 = studio.matte_box(product.alpha)
        bw, bh = x1 - x0, y1 - y0
        if req.scene == "white":
            return studio.MAIN_FILL * min(req.width / bw, req.height / bh)
        fill = studio.SCALE_RULE.get(product.article, studio.SCALE_RULE["unknown"])
        return fill * min(req.width, req.height) / max(bw, bh)

    def compose(self, product: Product, req: SceneRequest, variant: int) -> tuple[np.ndarray, str | None]:
        """One image, and the credit line its scene's licence asks for (a photo's attribution)."""
        assert product.alpha is not None
        if req.scene == "white":
            return studio.white_main_image(product.rgb, product.alpha, req.width, req.height), None
        if req.scene == "auto":
            choices = studio.scenes_for(product.article)
            scene, placement = choices[variant % len(choices)], variant // len(choices)
        else:
            scene, placement = studio.get_scene(req.scene), variant
        image = studio.scene_image(
            product.rgb, product.alpha, scene, req.width, req.height, product.article, placement
        )
        return image, (scene.attribution or None) if scene.kind == "photo" else None
