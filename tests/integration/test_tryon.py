"""tryon and tryon_bytes ensembles on the real embedded tritonserver, over gRPC."""

from __future__ import annotations

import asyncio
import io
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aioclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from ecomgen.creative import provenance
from ecomgen.serving.handlers.tryon import preprocess
from ecomgen_client import InvalidInputError, ProductClient
from ecomgen_client.contracts import TRYON, TRYON_BYTES
from training.tryon import to_uint8
from training.viton import load_pairs, read_pairs

pytestmark = pytest.mark.integration
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "viton"


def reference(served, person: np.ndarray, garment: np.ndarray) -> dict[str, np.ndarray]:
    """The PyTorch pipeline on exactly what tryon_pre feeds the networks."""
    x = {k: torch.from_numpy(v[None]) for k, v in preprocess(person, garment).items()}
    from ecomgen.models.tryon import TryOnPipeline

    pipe = TryOnPipeline(
        served.network("tryon_parser"),
        served.network("tryon_layout"),
        served.network("tryon_warp").warp,
        served.network("tryon_synthesis").synthesis,
    ).eval()
    with torch.no_grad():
        out = pipe(x["person"], x["garment"], x["garment_mask"])
    return {"image": to_uint8(out["image"])[0], "warped_garment": to_uint8(out["warped_garment"])[0]}


def level_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a.astype(np.int16) - b.astype(np.int16))


def raw(name: str, array: np.ndarray, dtype: str = "UINT8") -> grpcclient.InferInput:
    i = grpcclient.InferInput(name, list(array.shape), dtype)
    i.set_data_from_numpy(array)
    return i


def test_fixture_pairs_match_the_pytorch_pipeline(served, pairs):
    with ProductClient(served.url) as client:
        for person, garment in zip(pairs.person, pairs.cloth, strict=True):
            got = client.try_on_debug(person, garment)
            want = reference(served, person, garment)
            assert got.image.shape == (256, 192, 3) and got.image.dtype == np.uint8
            assert got.mask.shape == (256, 192)
            for name in ("image", "warped_garment"):
                d = level_diff(getattr(got, name), want[name])
                # OpenVINO vs PyTorch fp32: rounding-level differences only.
                assert d.max() <= 3 and (d > 1).mean() < 1e-3, f"{name}: max {d.max()}"


def test_any_size_and_pil_in_pil_out(served, pairs):
    person = Image.fromarray(pairs.person[0]).resize((768, 1024))
    garment = Image.fromarray(pairs.cloth[1]).resize((333, 401))
    with ProductClient(served.url) as client:
        out = client.try_on(person, garment)
        assert isinstance(out, Image.Image) and out.size == (192, 256)
        arr = client.try_on(np.asarray(person), np.asarray(garment))
    assert isinstance(arr, np.ndarray) and arr.shape == (256, 192, 3)
    assert level_diff(np.asarray(out), arr).max() == 0


def test_trained_tryon_changes_the_garment(served, pairs):
    """Unpaired: the torso takes on the new garment's colour rather than keeping the old one."""
    if not served.trained["tryon"]:
        pytest.skip("no trained try-on checkpoints yet")
    from training.tryon_metrics import transfer_check

    own = load_pairs(read_pairs(FIXTURES, "test", paired=True))
    with ProductClient(served.url) as client:
        results = np.stack([client.try_on(p, g) for p, g in zip(pairs.person, pairs.cloth, strict=True)])
    # Unpaired person i is paired person i, so own.cloth[i] is the garment they wear.
    verdict = transfer_check(results, pairs.person, pairs.regions, pairs.cloth, own.cloth)
    decided = verdict[np.isfinite(verdict)]
    assert decided.size and decided.mean() >= 0.5


def test_trained_tryon_keeps_the_hands(served):
    """The README example: the hands of 000010_0 (long sleeves, so its arm pixels are its hands)
    stay where they were when it tries on a short-sleeved top."""
    if not served.trained["tryon"]:
        pytest.skip("no trained try-on checkpoints yet")
    from scipy.ndimage import binary_erosion

    from ecomgen.models.tryon import ARMS

    data = load_pairs(read_pairs(FIXTURES, "test", paired=True))
    person, garment = data.person[1], data.cloth[2]  # 000010_0 with 000020_1
    hands = binary_erosion(data.regions[1] == ARMS, iterations=2)
    with ProductClient(served.url) as client:
        result = np.asarray(client.try_on(person, garment))
    kept = np.linalg.norm(result[hands].astype(float) - person[hands].astype(float), axis=1) <= 40
    assert hands.sum() > 100 and kept.mean() >= 0.9


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 32, 32, 3), "axis 1 is 32, allowed [64, 2048]"),
        ((1, 3000, 100, 3), "axis 1 is 3000"),
        ((1, 0, 0, 3), "axis 1 is 0"),
    ],
)
def test_bad_images_get_invalid_arg_naming_the_problem(served, pairs, shape, message):
    with grpcclient.InferenceServerClient(served.url) as c:
        with pytest.raises(InferenceServerException) as err:
            c.infer(TRYON.name, [raw("person", np.zeros(shape, np.uint8)), raw("garment", pairs.cloth[:1])])
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
        assert message in err.value.message() and "person" in err.value.message()
        # Triton itself rejects a wrong channel count or rank, naming the input.
        with pytest.raises(InferenceServerException) as err:
            c.infer(
                TRYON.name,
                [raw("person", pairs.person[:1]), raw("garment", np.zeros((1, 80, 80, 4), np.uint8))],
            )
        assert "garment" in err.value.message()
        with pytest.raises(InferenceServerException, match="person"):
            c.infer(
                TRYON.name,
                [
                    raw("person", np.zeros((1, 80, 80, 3), np.float32), "FP32"),
                    raw("garment", pairs.cloth[:1]),
                ],
            )
        assert c.is_server_live() and c.is_model_ready(TRYON.name)


def test_client_validates_before_sending(served):
    with ProductClient(served.url) as client:
        with pytest.raises(InvalidInputError, match="garment has shape"):
            client.try_on(np.zeros((100, 100, 3), np.uint8), np.zeros((100, 100), np.uint8))
        with pytest.raises(InvalidInputError, match="20x100 pixels"):
            client.try_on(np.zeros((20, 100, 3), np.uint8), np.zeros((100, 100, 3), np.uint8))


def test_bad_requests_do_not_fail_their_batch_neighbours(served, pairs):
    good = [(pairs.person[i % 4], pairs.cloth[(i + 1) % 4]) for i in range(8)]
    bad = [
        (np.zeros((20, 192, 3), np.uint8), pairs.cloth[0]),
        (np.zeros((0, 0, 3), np.uint8), pairs.cloth[1]),
    ]

    async def send(person: np.ndarray, garment: np.ndarray):
        async with aioclient.InferenceServerClient(served.url) as c:
            ins = []
            for name, arr in (("person", person), ("garment", garment)):
                i = aioclient.InferInput(name, [1, *arr.shape], "UINT8")
                i.set_data_from_numpy(arr[None])
                ins.append(i)
            try:
                return (await c.infer(TRYON.name, ins)).as_numpy("image")[0]
            except InferenceServerException as e:
                return e

    async def burst():
        mixed = good[:4] + bad + good[4:]
        return await asyncio.gather(*(send(p, g) for p, g in mixed))

    results = asyncio.run(burst())
    errors = results[4:6]
    assert all(isinstance(e, InferenceServerException) and "person" in e.message() for e in errors)
    for (p, g), r in zip(good, results[:4] + results[6:], strict=True):
        assert isinstance(r, np.ndarray), f"a good request failed: {r}"
        assert level_diff(r, reference(served, p, g)["image"]).max() <= 3


def encoded(image: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt)
    return buf.getvalue()


def bytes_input(name: str, data: bytes) -> grpcclient.InferInput:
    i = grpcclient.InferInput(name, [1, 1], "BYTES")
    i.set_data_from_numpy(np.array([[data]], dtype=np.object_))
    return i


def test_bytes_model_round_trip_and_garbage(served, pairs):
    person, garment = encoded(pairs.person[0], "JPEG"), encoded(pairs.cloth[1], "PNG")
    with grpcclient.InferenceServerClient(served.url) as c:
        out = c.infer(TRYON_BYTES.name, [bytes_input("person", person), bytes_input("garment", garment)])
        png = out.as_numpy("image")[0, 0]
        image = np.asarray(Image.open(io.BytesIO(png)))
        assert image.shape == (256, 192, 3)
        want = reference(served, np.asarray(Image.open(io.BytesIO(person))), pairs.cloth[1])["image"]
        # The same try-on, plus the invisible watermark (about 40 dB on a 256x192 photo).
        assert provenance.psnr(image, want) >= 36.0
        assert provenance.decode_watermark(image).found
        for data, message in ((b"not an image at all", "not a decodable"), (b"", "empty")):
            with pytest.raises(InferenceServerException) as err:
                c.infer(TRYON_BYTES.name, [bytes_input("person", person), bytes_input("garment", data)])
            assert err.value.status() == "StatusCode.INVALID_ARGUMENT"
            assert message in err.value.message() and "garment" in err.value.message()
        assert c.is_server_live() and c.is_model_ready(TRYON_BYTES.name)


def test_cli_writes_a_strip_next_to_the_person(served, tmp_path):
    person = shutil.copy(FIXTURES / "test" / "image" / "000010_0.jpg", tmp_path / "shopper.jpg")
    garment = shutil.copy(FIXTURES / "test" / "cloth" / "000020_1.jpg", tmp_path / "shirt.jpg")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecomgen_client",
            "tryon",
            str(person),
            str(garment),
            "--url",
            served.url,
            "--debug",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    strip = Image.open(tmp_path / "shopper_tryon_shirt.png")
    assert strip.size[1] > 256 and strip.size[0] > 5 * 192  # person | garment | warped | mask | result
