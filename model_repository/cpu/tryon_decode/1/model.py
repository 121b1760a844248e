"""tryon_decode (tryon_bytes): encoded JPEG/PNG bytes -> the same tensors as tryon_pre.

Garbage bytes, empty payloads and images outside the size bounds get INVALID_ARG naming
the input; the image header is checked before any pixel is decoded.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from ecomgen_triton import BatchedPythonModel
from tryon_common import decode
from tryon_pre import prepare_pairs


def _bytes(value: object) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode()


class TritonPythonModel(BatchedPythonModel):
    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        persons = [decode("person", _bytes(v)) for v in arrays["person"].reshape(-1)]
        garments = [decode("garment", _bytes(v)) for v in arrays["garment"].reshape(-1)]
        return prepare_pairs(persons, garments)

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch
