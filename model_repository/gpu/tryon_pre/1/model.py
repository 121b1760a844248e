"""tryon_pre: any-size uint8 person + garment photos -> the networks' 256x192 inputs.

Each request is checked (rank, channels, empty, side bounds) and resized on its own in
``prepare``, so requests of different sizes still share a batch downstream.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_triton import BatchedPythonModel
from tryon_common import check_image, preprocess


def prepare_pairs(persons: Sequence[np.ndarray], garments: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    items = [preprocess(p, g) for p, g in zip(persons, garments, strict=True)]
    return {k: np.stack([item[k] for item in items]) for k in items[0]}


class TritonPythonModel(BatchedPythonModel):
    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        for name in ("person", "garment"):
            for image in arrays[name]:
                check_image(name, image)

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return prepare_pairs(list(arrays["person"]), list(arrays["garment"]))

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch
