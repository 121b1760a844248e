"""Try-on preprocessing (tryon_pre / tryon_decode) without a server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from export.triton_python.ecomgen_common import RequestError
from export.triton_python.tryon_common import (
    HEIGHT,
    MAX_ENCODED_BYTES,
    WIDTH,
    check_image,
    decode,
    encode_png,
    fit,
    garment_mask,
    preprocess,
)


def encoded(image: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((100, 100), np.uint8, "expected \\[height, width, 3\\]"),
        ((100, 100, 4), np.uint8, "4 channels"),
        ((100, 100, 1), np.uint8, "1 channels"),
        ((0, 0, 3), np.uint8, "empty image"),
        ((32, 100, 3), np.uint8, "32x100 pixels"),
        ((100, 3000, 3), np.uint8, "100x3000 pixels"),
        ((100, 100, 3), np.float32, "dtype float32"),
    ],
)
def test_bad_images_are_named(shape, dtype, message):
    with pytest.raises(RequestError, match=message):
        check_image("person", np.zeros(shape, dtype))


def test_fit_keeps_aspect_and_pads_with_background():
    wide = np.zeros((100, 400, 3), np.uint8)  # black, 4:1
    out = fit(wide)
    assert out.shape == (HEIGHT, WIDTH, 3)
    assert (out[0] == 255).all() and (out[-1] == 255).all()  # padded rows top and bottom
    assert (out[HEIGHT // 2] == 0).all()
    same = np.random.default_rng(0).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    assert fit(same) is not None and (fit(same) == same).all()


def test_garment_mask_fills_light_logo_inside_dark_shirt():
    g = np.full((HEIGHT, WIDTH, 3), 255, np.uint8)
    g[50:200, 40:150] = 30
    g[100:120, 80:100] = 250  # a white logo
    m = garment_mask(g)
    assert m.dtype == np.float32
    assert m[50:200, 40:150].all() and not m[:40].any() and not m[:, :30].any()


def test_preprocess_any_size_to_network_tensors():
    rng = np.random.default_rng(0)
    out = preprocess(
        rng.integers(0, 255, (700, 300, 3), np.uint8), rng.integers(0, 255, (64, 64, 3), np.uint8)
    )
    assert out["person"].shape == (3, HEIGHT, WIDTH) and out["person"].dtype == np.float32
    assert out["garment_mask"].shape == (1, HEIGHT, WIDTH)
    assert out["person"].min() >= -1 and out["person"].max() <= 1


def test_decode_valid_jpeg_and_png():
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), np.uint8)
    assert (decode("person", encoded(image)) == image).all()
    assert decode("person", encoded(image, "JPEG")).shape == (120, 90, 3)
    gray = encoded(image[..., 0])
    assert decode("garment", gray).shape == (120, 90, 3)  # converted to RGB


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x00garbage\xff" * 10, "not a decodable"),
        (encoded(np.zeros((80, 80, 3), np.uint8))[:60], "not a decodable"),  # truncated PNG
        (encoded(np.zeros((3000, 70, 3), np.uint8)), "3000x70 pixels"),
        (b"0" * (MAX_ENCODED_BYTES + 1), "limit"),
    ],
)
def test_decode_rejects_bad_bytes_with_a_clear_error(data, message):
    with pytest.raises(RequestError, match=message):
        decode("person", data)


def test_encode_png_round_trips():
    image = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
    assert (decode("image", encode_png(image)) == image).all()
