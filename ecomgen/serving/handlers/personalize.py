"""personalize's Python steps: fit the history, combine the posteriors and sample, decode to uint8.

The maths lives in ``ecomgen.serving.aggregate`` (also what the evaluation runs); these
steps only move tensors in and out of it. Each request is one shopper, computed alone.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from ecomgen.errors import RequestError
from ecomgen.numerics import from_uint8_hwc, to_uint8_hwc
from ecomgen.serving.aggregate import check_weights, load_catalogue, request_latents
from ecomgen.serving.step import Step
from ecomgen_client.contracts import PRODUCT_IMAGE_HW

log = logging.getLogger("ecomgen.serving")
HEIGHT, WIDTH = PRODUCT_IMAGE_HW


def fit_product(image: np.ndarray) -> np.ndarray:
    """Any RGB photo -> 64x48, aspect kept, padded white (catalogue photos sit on white).

    A photo of the catalogue's 3:4 shape gets exactly the bicubic resize training used.
    """
    h, w = image.shape[:2]
    scale = min(HEIGHT / h, WIDTH / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BICUBIC))
    if (nh, nw) == (HEIGHT, WIDTH):
        return resized
    out = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    top, left = (HEIGHT - nh) // 2, (WIDTH - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


class Preprocess(Step):
    """history [N, H, W, 3] (+ optional weights [N]) -> image [N, 3, 64, 48] and weights summing to 1."""

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        n = arrays["history"].shape[0]
        if "weights" in arrays and arrays["weights"].shape[0] != n:
            raise RequestError(
                f"input 'weights' has {arrays['weights'].shape[0]} values for {n} history images"
            )

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        history = batch["history"]
        images = np.stack([fit_product(im) for im in history])
        pi = check_weights(batch.get("weights"), history.shape[0]).astype(np.float32)
        return {"image": from_uint8_hwc(images), "pi": pi}


class Aggregate(Step):
    """The history's N posteriors -> ``count`` latents (``aggregate`` then ``sample``)."""

    def setup(self) -> None:
        self.temperature = float(self.params.get("temperature", "1.0"))

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z = request_latents(
            batch["mu"], batch["logvar"], batch["pi"], batch["count"], batch["seed"], self.temperature
        )
        return {"z": z}


class Postprocess(Step):
    """Decoded images -> uint8, and the ids of the nearest catalogue items to each latent."""

    def setup(self) -> None:
        name = self.params.get("catalogue", "")
        path = self.config.model_dir / name
        self.k = self.config.outputs["similar"].dims[-1]
        self.catalogue = load_catalogue(path) if path.exists() else None
        if self.catalogue is None:
            log.warning(
                "%s: no %s beside the model; 'similar' will hold -1", self.config.name, name or "catalogue"
            )

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        z = batch["z"]
        if self.catalogue is None or self.catalogue.latents.shape[1] != z.shape[1]:
            similar = np.full((z.shape[0], self.k), -1, np.int64)
        else:
            similar = self.catalogue.nearest(z, self.k)
        return {"image": to_uint8_hwc(batch["image"]), "similar": similar}
