"""personalize's Python steps: fit the history and measure its colours, combine the posteriors and
choose latents by colour, recolour the decoded images towards the history's colour and make uint8.

The maths lives in ``ecomgen.serving.aggregate`` (also what the evaluation runs); these
steps only move tensors in and out of it. Each request is one shopper, computed alone.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

from ecomgen.errors import RequestError
from ecomgen.numerics import from_uint8_hwc, to_uint8_hwc
from ecomgen.serving.aggregate import (
    ColourChoice,
    check_weights,
    dominant_colour,
    history_colour,
    load_catalogue,
    load_colour_predictor,
    recolour,
    request_latents,
)
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
    """history [N, H, W, 3] (+ optional weights [N]) -> image [N, 3, 64, 48], weights summing to 1
    and each photo's colour (``palette`` [N, 3], L*a*b*, measured on the fitted 64x48 photo)."""

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
        palette = dominant_colour(images).astype(np.float32)
        return {"image": from_uint8_hwc(images), "pi": pi, "palette": palette}


class Aggregate(Step):
    """The history's N posteriors -> ``count`` latents, and the colour each image should have.

    ``aggregate`` then ``sample``. Optionally (parameters ``candidates`` > count and
    ``colour_predictor``, a file beside the model; off in the served spec, see
    ``ecomgen.specs.personalize``) ``candidates`` latents are drawn and the ``count`` predicted
    nearest the history's colour kept; without the file, plain sampling and a warning.
    """

    def setup(self) -> None:
        self.temperature = float(self.params.get("temperature", "1.0"))
        self.candidates = int(self.params.get("candidates", "0"))
        name = self.params.get("colour_predictor", "")
        path = self.config.model_dir / name
        self.predictor = load_colour_predictor(path) if name and path.exists() else None
        if self.candidates and self.predictor is None:
            log.warning(
                "%s: no %s beside the model; latents are not chosen by colour", self.config.name, name
            )

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        target = history_colour(batch["palette"], batch["pi"])
        choice = None
        if self.predictor is not None and self.predictor.latent_dim == batch["mu"].shape[1]:
            choice = ColourChoice(self.predictor, target, self.candidates)
        z = request_latents(
            batch["mu"], batch["logvar"], batch["pi"], batch["count"], batch["seed"], self.temperature, choice
        )
        return {"z": z, "colour": np.repeat(target[None].astype(np.float32), len(z), 0)}


class Postprocess(Step):
    """Decoded images -> uint8, recoloured towards the history's colour by at most ``max_shift``
    (CIE76), and the ids of the nearest catalogue items to each latent."""

    def setup(self) -> None:
        self.max_shift = float(self.params.get("max_shift", "0"))
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
        image = recolour(to_uint8_hwc(batch["image"]), batch["colour"], self.max_shift)
        return {"image": image, "similar": similar}
