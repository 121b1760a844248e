"""Guided-filter matte refinement: sizes, edges that follow the photo, constant mattes, no torch."""

from __future__ import annotations

import ast
import inspect

import cv2
import numpy as np
import pytest

from ecomgen.creative import matte
from ecomgen.creative.matte import refine_alpha, upsample_bilinear


def step_edge_photo(h: int, w: int, edge_x: int) -> tuple[np.ndarray, np.ndarray]:
    """A dark product left of ``edge_x`` on a light, slightly noisy background, and its true mask."""
    rng = np.random.default_rng(0)
    photo = np.full((h, w, 3), 235, np.uint8)
    photo[:, :edge_x] = (40, 60, 120)
    photo = np.clip(photo.astype(np.int16) + rng.integers(-4, 5, photo.shape), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.float32)
    mask[:, :edge_x] = 1
    return photo, mask


@pytest.mark.parametrize("hw", [(2000, 1500), (256, 192), (17, 300), (64, 48)])
def test_output_size_and_dtype(hw):
    photo = np.random.default_rng(1).integers(0, 256, (*hw, 3), dtype=np.uint8)
    low = np.random.default_rng(2).random((256, 256)).astype(np.float32)
    out = refine_alpha(photo, low)
    assert out.shape == hw and out.dtype == np.uint8


def test_refined_edge_follows_the_photo_better_than_bilinear():
    h, w, edge_x = 600, 800, 413  # the edge falls between low-resolution pixels
    photo, mask = step_edge_photo(h, w, edge_x)
    # The network's view: the true mask at 256x256, area-averaged (soft), then blurred a little.
    low = cv2.GaussianBlur(cv2.resize(mask, (256, 256), interpolation=cv2.INTER_AREA), (0, 0), 1.0)
    refined = refine_alpha(photo, low).astype(np.float32) / 255
    plain = upsample_bilinear(low, (h, w)).astype(np.float32) / 255
    band = slice(edge_x - 12, edge_x + 12)  # the edge region, where the two differ
    err_refined = np.abs(refined[:, band] - mask[:, band]).mean()
    err_plain = np.abs(plain[:, band] - mask[:, band]).mean()
    assert err_refined < 0.5 * err_plain, (err_refined, err_plain)
    # Far from the edge the matte is exactly 0 or 1 (snapped), not noisy.
    assert (refined[:, : edge_x - 20] == 1).all() and (refined[:, edge_x + 20 :] == 0).all()


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_constant_mattes_stay_constant(value):
    photo = np.random.default_rng(3).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    out = refine_alpha(photo, np.full((256, 256), value, np.float32))
    assert (out == round(value * 255)).all()


def test_near_constant_matte_snaps():
    photo = np.random.default_rng(4).integers(0, 256, (300, 500, 3), dtype=np.uint8)
    low = np.full((256, 256), 0.99, np.float32)
    low[100:110, 100:110] = 0.985
    assert (refine_alpha(photo, low) == 255).all()


def test_bad_inputs_are_rejected():
    with pytest.raises(ValueError):
        refine_alpha(np.zeros((10, 10), np.uint8), np.zeros((4, 4), np.float32))
    with pytest.raises(ValueError):
        refine_alpha(np.zeros((10, 10, 3), np.uint8), np.zeros((4, 4, 1), np.float32))


def test_torch_free():
    tree = ast.parse(inspect.getsource(matte))
    names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert {n.split(".")[0] for n in names} <= {"__future__", "math", "cv2", "numpy", "PIL"}
