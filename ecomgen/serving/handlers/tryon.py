"""Try-on pre and post steps; training and the PyTorch reference import the same preprocessing.

Each request is checked and fitted to 256x192 on its own in ``prepare``, so requests of
different sizes still share a batch downstream.
"""

from __future__ import annotations

import numpy as np

from ecomgen.creative.images import as_bytes, decode, fit
from ecomgen.creative.provenance import COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
from ecomgen.numerics import from_uint8_hwc, to_uint8_hwc
from ecomgen.serving.handlers.labelled import labelled, signer
from ecomgen.serving.step import Step
from ecomgen_client.contracts import PHOTO_MAX_SIDE, PHOTO_MIN_SIDE, TRYON_HW

HEIGHT, WIDTH = TRYON_HW
# VITON photos sit on a near-white studio background; padding uses the same colour.
BACKGROUND = 255
# A garment pixel differs from white by more than this in some channel.
GARMENT_THRESHOLD = 24


def garment_mask(garment: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 catalogue photo -> HxW float32 {0, 1}: the pixels that are not background.

    A threshold on the distance from white, then the holes inside each row and column
    span are filled (a white logo on a dark shirt is still shirt).
    """
    fg = (BACKGROUND - garment.astype(np.int16)).max(axis=2) > GARMENT_THRESHOLD
    rows = _fill_spans(fg)
    cols = _fill_spans(fg.T).T
    return (fg | (rows & cols)).astype(np.float32)


def _fill_spans(mask: np.ndarray) -> np.ndarray:
    """True between the first and last True of each row."""
    any_ = mask.any(axis=1)
    first = np.where(any_, mask.argmax(axis=1), mask.shape[1])
    last = np.where(any_, mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), -1)
    idx = np.arange(mask.shape[1])[None, :]
    return (idx >= first[:, None]) & (idx <= last[:, None])


def preprocess(person: np.ndarray, garment: np.ndarray) -> dict[str, np.ndarray]:
    """One pair of uint8 images (any valid size) -> the parser/warp inputs, unbatched."""
    p, g = fit(person, HEIGHT, WIDTH, BACKGROUND), fit(garment, HEIGHT, WIDTH, BACKGROUND)
    return {"person": from_uint8_hwc(p), "garment": from_uint8_hwc(g), "garment_mask": garment_mask(g)[None]}


def prepare_pairs(persons: list[np.ndarray], garments: list[np.ndarray]) -> dict[str, np.ndarray]:
    items = [preprocess(p, g) for p, g in zip(persons, garments, strict=True)]
    return {k: np.stack([item[k] for item in items]) for k in items[0]}


class Preprocess(Step):
    """uint8 person + garment photos (64-2048 px a side) -> the networks' 256x192 inputs."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return prepare_pairs(list(arrays["person"]), list(arrays["garment"]))

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return batch


class Decode(Preprocess):
    """Encoded JPEG/PNG/WebP bytes -> the same tensors as Preprocess."""

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        def images(name: str) -> list[np.ndarray]:
            return [
                decode(name, as_bytes(v), PHOTO_MIN_SIDE, PHOTO_MAX_SIDE) for v in arrays[name].reshape(-1)
            ]

        return prepare_pairs(images("person"), images("garment"))


class Encode(Step):
    """The synthesis output -> PNG bytes, labelled as a composite of a real photo with AI output."""

    def setup(self) -> None:
        signer()  # configured (or reported off) at load, not on the first request

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        images = to_uint8_hwc(batch["image"])
        blobs = [labelled(im, "png", COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA) for im in images]
        return {"image": np.array([[b] for b in blobs], dtype=np.object_)}
