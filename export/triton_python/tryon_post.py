"""tryon_post: synthesis outputs in [-1, 1] / [0, 1] -> uint8 HWC images (and the debug outputs)."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_common import to_uint8_hwc
from ecomgen_triton import BatchedPythonModel


def mask_to_uint8(mask: np.ndarray) -> np.ndarray:
    """N x 1 x H x W in [0, 1] -> N x H x W uint8."""
    return np.clip(mask[:, 0] * 255.0 + 0.5, 0, 255).astype(np.uint8)


class TritonPythonModel(BatchedPythonModel):
    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "image": to_uint8_hwc(batch["image"]),
            "warped_garment": to_uint8_hwc(batch["warped_garment"]),
            "mask": mask_to_uint8(batch["mask"]),
        }
