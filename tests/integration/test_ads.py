"""ad_creative, inventory_image and inventory_sheet on the real server: sizes, labels, bad fields."""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from PIL import Image
from tritonclient.utils import InferenceServerException

from ecomgen.creative.provenance import (
    COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA,
    TRAINED_ALGORITHMIC_MEDIA,
    decode_watermark,
    verify,
)
from ecomgen_client import InvalidInputError, ProductClient
from ecomgen_client.ops import SheetItem

pytestmark = pytest.mark.integration
FORMATS = {
    "1080x1080": (1080, 1080),
    "1080x1350": (1080, 1350),
    "1200x628": (1200, 628),
    "1080x1920": (1080, 1920),
}


def ad(client: ProductClient, **kw):  # type: ignore[no-untyped-def]
    args = {"class_id": "Dresses", "seed": 5, "variants": 2, "badge": "NEW", "cta": "Shop now", **kw}
    return client.ad_creatives("Linen summer dress", "49.90", "EUR", **args)


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_format_has_its_exact_size_and_variants_differ(served, fmt):
    with ProductClient(served.url, timeout_s=120) as client:
        creatives = ad(client, format=fmt, encoding="png")
    images = [Image.open(io.BytesIO(c)) for c in creatives]
    assert [im.size for im in images] == [FORMATS[fmt]] * 2 and images[0].format == "PNG"
    a, b = (np.asarray(im.convert("RGB")).astype(int) for im in images)
    assert np.abs(a - b).mean() > 5, "variants differ in product seed and layout template"


@pytest.mark.parametrize("encoding", ["jpeg", "webp", "png"])
def test_outputs_are_labelled_xmp_c2pa_and_watermark(served, encoding):
    with ProductClient(served.url, timeout_s=120) as client:
        (creative,) = ad(client, variants=1, encoding=encoding)
    report = verify(creative, trust_anchors_pem=served.c2pa_ca.decode())
    assert report.xmp_source_type == TRAINED_ALGORITHMIC_MEDIA
    assert report.c2pa.state == "trusted" and report.c2pa.source_type == TRAINED_ALGORITHMIC_MEDIA
    assert report.watermark is not None and report.watermark.found
    assert report.ok


def test_the_watermark_survives_jpeg_75(served):
    with ProductClient(served.url, timeout_s=120) as client:
        (creative,) = ad(client, variants=1, encoding="png")
    buf = io.BytesIO()
    Image.open(io.BytesIO(creative)).convert("RGB").save(buf, "JPEG", quality=75)
    result = decode_watermark(np.asarray(Image.open(buf)))
    assert result.found, result


def test_an_uploaded_photo_is_labelled_as_a_composite(served, pairs):
    buf = io.BytesIO()
    Image.fromarray(pairs.cloth[0]).save(buf, "JPEG")
    with ProductClient(served.url, timeout_s=120) as client:
        (creative,) = client.ad_creatives("Striped shirt", "29", "GBP", product=buf.getvalue(), variants=1)
    assert verify(creative).xmp_source_type == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA


def test_tryon_bytes_output_is_labelled(served, pairs):
    def jpeg(a: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG")
        return buf.getvalue()

    with ProductClient(served.url) as client:
        out = client.infer(
            "tryon_bytes",
            {
                "person": np.array([[jpeg(pairs.person[0])]], object),
                "garment": np.array([[jpeg(pairs.cloth[1])]], object),
            },
        )
    report = verify(bytes(out["image"][0, 0]), trust_anchors_pem=served.c2pa_ca.decode())
    assert report.xmp_source_type == COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert report.c2pa.state == "trusted"


def test_inventory_states_and_sheet(served):
    with ProductClient(served.url, timeout_s=120) as client:
        images = {
            state: Image.open(io.BytesIO(client.inventory_image(stock, class_id=7, seed=1, **kw)))
            for state, stock, kw in (
                ("in_stock", 40, {}),
                ("low", 3, {}),
                ("sold_out", 0, {}),
                ("back_order", 0, {"restock_date": "2099-12-12"}),
            )
        }
        sheet = client.inventory_sheet(
            [SheetItem(f"SKU-{i:03d}", stock, i % 10, seed=i) for i, stock in enumerate([0, 2, 9, 50] * 16)],
            title="Warehouse A",
        )
    arrays = {k: np.asarray(v.convert("RGB")).astype(int) for k, v in images.items()}
    for a in ("in_stock", "low", "sold_out", "back_order"):
        for b in ("in_stock", "low", "sold_out", "back_order"):
            if a < b:
                assert np.abs(arrays[a] - arrays[b]).mean() > 1, f"{a} and {b} look the same"
    assert Image.open(io.BytesIO(sheet)).size[0] >= 800
    assert verify(sheet).xmp_source_type == TRAINED_ALGORITHMIC_MEDIA


def raw_ad(**fields: object) -> list[grpcclient.InferInput]:
    values = {
        "class_id": np.array([4], np.int32),
        "seed": np.array([1], np.int64),
        "variants": np.array([2], np.int32),
        "title": "Dress",
        "price": "10.00",
        "currency": "EUR",
        "format": "1080x1080",
        **fields,
    }
    out = []
    for name, v in values.items():
        arr = v if isinstance(v, np.ndarray) else np.array([v.encode() if isinstance(v, str) else v], object)
        t = grpcclient.InferInput(
            name, list(arr.shape), {np.int32: "INT32", np.int64: "INT64"}.get(arr.dtype.type, "BYTES")
        )
        t.set_data_from_numpy(arr)
        out.append(t)
    return out


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"title": "x" * 80}, "title"),
        ({"title": "Dress\u0007"}, "control character"),
        ({"format": "800x600"}, "format"),
        ({"price": "ten euros"}, "price"),
        ({"currency": "XXX"}, "currency"),
        ({"variants": np.array([17], np.int32)}, "variants"),
        ({"brand_colour": "#12"}, "brand_colour"),
        ({"title": "\U0001f6f8 saucer"}, "U+1F6F8"),
        ({"encoding": "gif"}, "encoding"),
    ],
)
def test_bad_fields_get_invalid_arg_naming_the_field(served, fields, message):
    with grpcclient.InferenceServerClient(served.url) as c:
        with pytest.raises(InferenceServerException) as err:
            c.infer("ad_creative", raw_ad(**fields))
        assert err.value.status() == "StatusCode.INVALID_ARGUMENT", err.value.message()
        assert message in err.value.message(), err.value.message()
        assert c.is_server_live() and c.is_model_ready("ad_creative")


def test_cjk_titles_render_and_the_client_checks_the_product(served):
    with ProductClient(served.url, timeout_s=120) as client:
        (creative,) = client.ad_creatives("夏季亚麻连衣裙", "299", "CNY", class_id=4, variants=1)
        assert Image.open(io.BytesIO(creative)).size == (1080, 1080)
        with pytest.raises(InvalidInputError, match="class_id"):
            client.ad_creatives("Dress", "10", "EUR", variants=1)


def test_cli_ads_and_verify(served, tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "ecomgen_client",
            "ads",
            "--class",
            "Heels",
            "--title",
            "Block heels",
            "--price",
            "79.00",
            "--currency",
            "EUR",
            "--variants",
            "2",
            "--url",
            served.url,
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "preview.png").exists()
    files = sorted(tmp_path.glob("ad_*.jpg"))
    assert len(files) == 2
    # ecomgen verify exits 0 only when XMP, a valid manifest and the watermark are all found.
    check = subprocess.run(
        [sys.executable, "-m", "ecomgen", "verify", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
