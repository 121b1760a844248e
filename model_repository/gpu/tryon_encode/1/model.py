"""tryon_encode (tryon_bytes): the synthesis output -> PNG bytes."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_common import to_uint8_hwc
from ecomgen_triton import BatchedPythonModel
from tryon_common import encode_png


class TritonPythonModel(BatchedPythonModel):
    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = to_uint8_hwc(batch["image"])
        return {"image": np.array([[encode_png(im)] for im in images], dtype=np.object_)}
