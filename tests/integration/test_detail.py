"""upscale and product_detail on the real embedded tritonserver, over gRPC."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from ecomgen.models.product_gan import generate
from ecomgen.numerics import from_uint8_hwc, psnr_uint8, to_uint8_hwc
from ecomgen_client import AsyncProductClient, InvalidInputError, ProductClient

pytestmark = pytest.mark.integration
PRODUCTS = Path(__file__).resolve().parents[1] / "fixtures" / "fashion-products" / "images"


def sr_reference(served, images: np.ndarray) -> np.ndarray:
    """The PyTorch SR network on exactly what upscale_pre feeds it."""
    with torch.no_grad():
        out = served.network("sr_network")(torch.from_numpy(from_uint8_hwc(images)))
    return to_uint8_hwc(out.numpy())


def photo(i: int = 0) -> np.ndarray:
    path = sorted(PRODUCTS.glob("*.jpg"))[i]
    return np.asarray(Image.open(path).convert("RGB").resize((48, 64)))


def test_upscale_matches_pytorch_at_any_size(served):
    with ProductClient(served.url) as client:
        for h, w in ((64, 48), (80, 60), (16, 37)):
            image = np.asarray(Image.fromarray(photo()).resize((w, h)))
            out = client.upscale(image)
            assert out.shape == (4 * h, 4 * w, 3) and out.dtype == np.uint8
            d = np.abs(out.astype(int) - sr_reference(served, image[None])[0].astype(int))
            assert d.max() <= 2, d.max()
        pil = client.upscale(Image.fromarray(photo(1)))
        assert isinstance(pil, Image.Image) and pil.size == (192, 256)


def test_same_size_requests_share_a_batch(served):
    images = [photo(i % 4) for i in range(16)]
    with grpcclient.InferenceServerClient(served.url) as c:
        before = c.get_inference_statistics("sr_network").model_stats[0]

    async def burst() -> list[np.ndarray]:
        async with AsyncProductClient(served.url) as client:
            return await asyncio.gather(*(client.upscale(im) for im in images))

    outs = asyncio.run(burst())
    with grpcclient.InferenceServerClient(served.url) as c:
        after = c.get_inference_statistics("sr_network").model_stats[0]
    assert all(o.shape == (256, 192, 3) for o in outs)
    executions = after.execution_count - before.execution_count
    assert after.inference_count - before.inference_count == 16 and executions < 16


def test_product_detail_is_product_gans_image_upscaled(served):
    classes, seeds = [4, 4, 7, 9], [10, 11, 12, 13]
    with ProductClient(served.url) as client:
        thumbs = np.concatenate(
            [client.generate_products(c, [s]) for c, s in zip(classes, seeds, strict=True)]
        )
        details = np.concatenate([client.product_detail(c, [s]) for c, s in zip(classes, seeds, strict=True)])
    assert details.shape == (4, 256, 192, 3)
    # Exactly the PyTorch chain generator -> SR (fp32 serving: rounding-level differences).
    generated = torch.from_numpy(generate(served.generator, np.array(classes), np.array(seeds)))
    with torch.no_grad():
        want = to_uint8_hwc(served.network("sr_network")(generated).numpy())
    assert np.abs(details.astype(int) - want.astype(int)).max() <= 2
    if not served.trained["product_detail"]:
        pytest.skip("random SR weights (no checkpoint yet): the close-up is not meant to look like anything")
    # Shrunk back x4 it is product_gan's image for the same pair.
    for thumb, detail in zip(thumbs, details, strict=True):
        shrunk = np.asarray(Image.fromarray(detail).resize((48, 64), Image.Resampling.BOX))
        assert psnr_uint8(thumb, shrunk) >= 25.0


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 15, 48, 3), "axis 1 is 15, allowed [16, 512]"),
        ((1, 64, 513, 3), "axis 2 is 513"),
        ((1, 0, 0, 3), "axis 1 is 0"),
    ],
)
def test_bad_images_get_invalid_arg_and_neighbours_succeed(served, shape, message):
    bad = grpcclient.InferInput("image", list(shape), "UINT8")
    bad.set_data_from_numpy(np.zeros(shape, np.uint8))
    with grpcclient.InferenceServerClient(served.url) as c:
        with pytest.raises(InferenceServerException) as err:
            c.infer("upscale", [bad])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT" and message in err.value.message()
        four = grpcclient.InferInput("image", [1, 64, 48, 4], "UINT8")
        four.set_data_from_numpy(np.zeros((1, 64, 48, 4), np.uint8))
        with pytest.raises(InferenceServerException, match="image"):
            c.infer("upscale", [four])
        assert c.is_server_live() and c.is_model_ready("upscale")
    with ProductClient(served.url) as client:
        assert client.upscale(photo()).shape == (256, 192, 3)
        with pytest.raises(InvalidInputError, match="15x48 pixels"):
            client.upscale(np.zeros((15, 48, 3), np.uint8))


def test_cli_writes_thumbnail_and_close_up(served, tmp_path):
    out = tmp_path / "detail.png"
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecomgen_client",
            "detail",
            "--class",
            "Handbags",
            "--seeds",
            "0-1",
            "--url",
            served.url,
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert Image.open(out).size == (2 * (192 + 2) + 2, 2 * (256 + 2) + 2)
