"""product_gan_pre (gpu target): validate (class_id, seed) and build the generator inputs.

Latents come from the seed on the host, with the same Philox stream as the cpu
target and the PyTorch reference, so a seed means the same image everywhere.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_common import check_range, latents_from_seeds, one_hot
from ecomgen_triton import BatchedPythonModel


class TritonPythonModel(BatchedPythonModel):
    def setup(self) -> None:
        self.num_classes = int(self.params["num_classes"])
        self.latent_dim = int(self.params["latent_dim"])

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        check_range("class_id", arrays["class_id"], 0, self.num_classes - 1)
        check_range("seed", arrays["seed"], 0, np.iinfo(np.int64).max)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "z": latents_from_seeds(batch["seed"], self.latent_dim),
            "class_onehot": one_hot(batch["class_id"], self.num_classes),
        }
