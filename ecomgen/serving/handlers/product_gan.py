"""product_gan's pre step: (class_id, seed) -> (z, class_onehot).

Latents come from the seed on the host with a counter-based generator, so a seed means
the same image on every target, batch position and batch size.
"""

from __future__ import annotations

import numpy as np

from ecomgen.numerics import latents_from_seeds, one_hot
from ecomgen.serving.step import Step


class Preprocess(Step):
    def setup(self) -> None:
        self.num_classes = int(self.params["num_classes"])
        self.latent_dim = int(self.params["latent_dim"])

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "z": latents_from_seeds(batch["seed"], self.latent_dim),
            "class_onehot": one_hot(batch["class_id"], self.num_classes),
        }
