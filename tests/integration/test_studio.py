"""product_cutout and product_scene on the real server: the matte, the white main image rule,
scenes that differ, the product's own pixels kept, provenance, and bad photos refused alone."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from ecomgen.creative import studio
from ecomgen.creative.provenance import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    verify,
)
from ecomgen_client import InvalidInputError, ProductClient
from tests.conftest import FIXTURES

pytestmark = pytest.mark.integration
CLOTH = FIXTURES / "viton" / "test" / "cloth"
MASK = FIXTURES / "viton" / "test" / "cloth-mask"


def photo(name: str = "000020_1.jpg", scale: int = 4) -> tuple[np.ndarray, bytes]:
    """A VITON garment enlarged to a shop-photo size (768x1024), as array and JPEG."""
    im = Image.open(CLOTH / name).convert("RGB")
    im = im.resize((im.width * scale, im.height * scale), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=92)
    return np.asarray(im), buf.getvalue()


def test_cutout_is_a_matte_at_the_photo_size_and_batch_independent(served):
    arr, _ = photo()
    with ProductClient(served.url, timeout_s=120) as client:
        alpha = client.cutout(arr)
        both = client.cutout(np.stack([arr, arr[:, ::-1].copy()]))
    assert alpha.shape == arr.shape[:2] and alpha.dtype == np.uint8
    assert np.array_equal(both[0], alpha), "a photo's matte does not depend on its batch neighbour"
    if served.trained["product_cutout"]:
        truth = np.asarray(Image.open(MASK / "000020_1.jpg").convert("L").resize(arr.shape[1::-1])) >= 128
        got = alpha >= 128
        iou = (got & truth).sum() / (got | truth).sum()
        assert iou >= 0.9, f"IoU {iou:.3f} with the fixture's cloth mask"


def rgba_photo(name: str = "000020_1.jpg", scale: int = 4) -> bytes:
    """The garment as a PNG whose alpha is its cloth mask: a shop's own cut-out, which the server
    uses instead of its matting network (the rule below then holds with any weights)."""
    arr, _ = photo(name, scale)
    mask = Image.open(MASK / name).convert("L").resize(arr.shape[1::-1], Image.Resampling.BILINEAR)
    return _encoded(Image.fromarray(np.dstack([arr, np.asarray(mask)])), "PNG")


@pytest.mark.parametrize("fmt", ["2000x2000", "1080x1350"])
def test_white_main_image_follows_the_marketplace_rule(served, fmt):
    uploads = [rgba_photo()]
    if served.trained["product_cutout"]:
        uploads.append(photo()[1])  # a plain JPEG: the served matting network finds the product
    w, h = (int(v) for v in fmt.split("x"))
    with ProductClient(served.url, timeout_s=120) as client:
        whites = [client.product_scene(u, scene="white", format=fmt)[0] for u in uploads]
    for png in whites:
        image = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert image.shape == (h, w, 3)
        assert studio.check_main_image(image) == [], studio.check_main_image(image)
        # Pure RGB 255 in the corners (no text, no badge, no tint).
        for corner in (image[:40, :40], image[-40:, -40:], image[:40, -40:], image[-40:, :40]):
            assert (corner == 255).all()


def test_scenes_differ_and_keep_the_products_pixels(served):
    arr, jpg = photo()
    with ProductClient(served.url, timeout_s=180) as client:
        scenes = client.product_scene(jpg, scene="auto", format="1080x1350", variants=3)
        alpha = client.cutout(arr)
        (white,) = client.product_scene(jpg, scene="white", format="1080x1350")
    images = [np.asarray(Image.open(io.BytesIO(s)).convert("RGB")).astype(int) for s in scenes]
    assert all(im.shape == (1350, 1080, 3) for im in images)
    for i in range(3):
        for j in range(i + 1, 3):
            assert np.abs(images[i] - images[j]).mean() > 5, "scene variants must differ"
    # Inside the matte's solid core, the white image's pixels are the photo's, resampled.
    served_white = np.asarray(Image.open(io.BytesIO(white)).convert("RGB"))
    expected = studio.white_main_image(arr, alpha, 1080, 1350)
    core = expected.astype(int).sum(axis=2) < 3 * 250  # the product (not the white background)
    diff = np.abs(served_white.astype(int) - expected.astype(int))[core]
    assert diff.mean() < 2.0, "the product's pixels were changed"


def test_provenance_says_composite_for_a_photo_and_generated_otherwise(served):
    _, jpg = photo()
    ca = served.c2pa_ca.decode()
    with ProductClient(served.url, timeout_s=120) as client:
        (upload,) = client.product_scene(jpg, scene="studio-white", format="1080x1080")
        (made,) = client.product_scene(class_id="Handbags", seed=3, scene="white", format="1080x1080")
    report = verify(upload, trust_anchors_pem=ca)
    assert report.xmp_source_type == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert (
        report.c2pa.source_type == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA and report.c2pa.state == "trusted"
    )
    assert report.watermark is not None and report.watermark.found and report.ok
    report = verify(made, trust_anchors_pem=ca)
    assert report.xmp_source_type == TRAINED_ALGORITHMIC_MEDIA and report.ok


def test_a_photo_scene_carries_its_photographers_credit(served):
    _, jpg = photo()
    scene = next(s for s in studio.SCENES if s.kind == "photo" and s.attribution)
    with ProductClient(served.url, timeout_s=120) as client:
        (png,) = client.product_scene(jpg, scene=scene.name, format="1080x1080")
    from xml.sax.saxutils import escape

    from ecomgen.creative.provenance import read_xmp

    xmp = read_xmp(png)
    assert xmp is not None and "<dc:rights>" in xmp.decode()
    assert escape(scene.attribution, {'"': "&quot;"}) in xmp.decode()


def _encoded(im: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def _bad_photos() -> dict[str, tuple[bytes, str]]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (80, 60, 3), dtype=np.uint8))
    frames = [rgb, rgb.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    return {
        "decompression bomb": (_encoded(Image.new("L", (10000, 10000)), "PNG"), "100,000,000 pixels"),
        "truncated": (_encoded(rgb, "PNG")[:300], "not a decodable"),
        "animated": (_encoded(frames[0], "WEBP", save_all=True, append_images=frames[1:]), "animation"),
        "1x1": (_encoded(Image.new("RGB", (1, 1)), "PNG"), "1x1 pixels"),
        "10000x10": (_encoded(Image.new("RGB", (10000, 10)), "PNG"), "10x10000 pixels"),
        "not an image": (b"GIF89a but not really" * 10, "not a decodable"),
        # An RGBA PNG's own alpha is the matte: fully transparent leaves nothing to place.
        "fully transparent": (_encoded(Image.new("RGBA", (60, 80), (200, 30, 30, 0)), "PNG"), "is empty"),
    }


@pytest.mark.parametrize("case", list(_bad_photos()))
def test_bad_photos_are_refused_alone(served, case):
    data, message = _bad_photos()[case]
    _, good = photo()
    results: dict[str, object] = {}

    def send(key: str, product: bytes) -> None:
        with ProductClient(served.url, timeout_s=120, retries=0) as client:
            try:
                results[key] = client.product_scene(product, scene="white", format="1080x1080")
            except Exception as e:  # the test inspects it
                results[key] = e

    threads = [threading.Thread(target=send, args=(k, p)) for k, p in (("good", good), ("bad", data))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    err = results["bad"]
    assert isinstance(err, InvalidInputError), err
    assert message in str(err) and "product" in str(err), str(err)
    assert isinstance(results["good"], list), results["good"]


@pytest.mark.parametrize(("mode", "ext"), [("CMYK", "JPEG"), ("I;16", "PNG")])
def test_cmyk_and_16_bit_photos_are_converted_not_refused(served, mode, ext):
    arr, _ = photo()
    im = Image.fromarray(arr)
    im = im.convert("CMYK") if mode == "CMYK" else Image.fromarray(arr[..., 0].astype(np.uint16) * 257)
    with ProductClient(served.url, timeout_s=120) as client:
        (png,) = client.product_scene(_encoded(im, ext), scene="white", format="1080x1080")
    assert Image.open(io.BytesIO(png)).size == (1080, 1080)


def test_a_photo_and_a_generated_product_together_are_refused(served):
    _, jpg = photo()
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    def tensor(name: str, value: object, dtype: str) -> grpcclient.InferInput:
        arr = np.array(
            [value], dtype=object if dtype == "BYTES" else {"INT32": np.int32, "INT64": np.int64}[dtype]
        )
        t = grpcclient.InferInput(name, [1], dtype)
        t.set_data_from_numpy(arr)
        return t

    inputs = [
        tensor("product", jpg, "BYTES"),
        tensor("class_id", 3, "INT32"),
        tensor("seed", 1, "INT64"),
        tensor("scene", b"white", "BYTES"),
        tensor("format", b"1080x1080", "BYTES"),
        tensor("variants", 1, "INT32"),
    ]
    with grpcclient.InferenceServerClient(served.url) as c, pytest.raises(InferenceServerException) as info:
        c.infer("product_scene", inputs, client_timeout=60)
    assert info.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "either product" in info.value.message() and "not both" in info.value.message()
