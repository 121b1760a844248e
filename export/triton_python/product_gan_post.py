"""product_gan_post (gpu target): generator output in [-1, 1] NCHW -> uint8 NHWC."""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_common import RequestError, to_uint8_hwc
from ecomgen_triton import BatchedPythonModel


class TritonPythonModel(BatchedPythonModel):
    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        if not np.isfinite(arrays["generated"]).all():
            raise RequestError("generator produced NaN/Inf (FP16 overflow?)")

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {"image": to_uint8_hwc(batch["generated"])}
