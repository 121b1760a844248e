"""Unit tests of the client's product-studio calls (cut-outs, scenes, white main images): no server."""

from __future__ import annotations

import asyncio
import inspect
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ecomgen_client import AsyncProductClient, InvalidInputError, ProductClient, _images, cli, ops
from ecomgen_client.contracts import AD_FORMATS, PRODUCT_SCENE, STUDIO_FORMATS
from tests.unit.studio_fakes import AsyncStudioServer, StudioServer, fake_alpha

Image = pytest.importorskip("PIL.Image")

COMPOSITE = "http://cv.iptc.org/newscodes/digitalsourcetype/compositeWithTrainedAlgorithmicMedia"


def photo(h: int = 40, w: int = 30) -> np.ndarray:
    """White, with a dark product box in the middle."""
    img = np.full((h, w, 3), 255, np.uint8)
    img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (30, 60, 90)
    return img


def jpeg(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95)
    return buf.getvalue()


@pytest.fixture
def server() -> StudioServer:
    return StudioServer()


@pytest.fixture
def client(server: StudioServer) -> ProductClient:
    return ProductClient(transport=server, backoff_s=0.0)


# --- cut-outs --------------------------------------------------------------------------------------


def test_cutout_numpy_in_numpy_out(client: ProductClient, server: StudioServer) -> None:
    img = photo()
    alpha = client.cutout(img)
    assert alpha.shape == (40, 30) and alpha.dtype == np.uint8
    np.testing.assert_array_equal(alpha, fake_alpha(img[None])[0])
    (sent,) = server.inferences("product_cutout")
    assert sent["image"].shape == (1, 40, 30, 3)


def test_cutout_pil_in_pil_l_out(client: ProductClient) -> None:
    out = client.cutout(Image.fromarray(photo()).convert("RGBA"))
    assert isinstance(out, Image.Image) and out.mode == "L" and out.size == (30, 40)


def test_cutout_batches_same_size_photos(client: ProductClient, server: StudioServer) -> None:
    batch = np.stack([photo(), 255 - photo()])
    alphas = client.cutout(batch)
    assert alphas.shape == (2, 40, 30)
    assert server.inferences("product_cutout")[0]["image"].shape == (2, 40, 30, 3)
    pils = client.cutout([Image.fromarray(photo()), photo()])
    assert isinstance(pils[0], Image.Image) and isinstance(pils[1], np.ndarray)


def test_cutout_refuses_mixed_sizes_small_and_bad_photos(client: ProductClient, server: StudioServer) -> None:
    for bad, message in (
        ([photo(40, 30), photo(30, 40)], "one size"),
        (photo(10, 40), "10x40 pixels"),
        (np.zeros((40, 40, 3), np.float32), "dtype"),
        (np.zeros((40, 40), np.uint8), "shape"),
        ([], "no images"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            client.cutout(bad)
    assert server.calls == []


def test_cutout_shrinks_a_large_photo_and_enlarges_the_matte(
    client: ProductClient, server: StudioServer
) -> None:
    big = photo(1000, 3000)
    rgba = client.cutout_rgba(big)
    assert server.inferences("product_cutout")[0]["image"].shape == (1, 683, 2048, 3)
    assert rgba.shape == (1000, 3000, 4)
    np.testing.assert_array_equal(rgba[..., :3], big)  # the photo's own pixels at its own size
    assert rgba[500, 1500, 3] == 255 and rgba[10, 10, 3] == 0


def test_cutout_rgba_is_the_photo_with_the_matte(client: ProductClient) -> None:
    img = photo()
    rgba = client.cutout_rgba(img)
    assert rgba.shape == (40, 30, 4)
    np.testing.assert_array_equal(rgba[..., :3], img)
    np.testing.assert_array_equal(rgba[..., 3], fake_alpha(img[None])[0])
    pil = client.cutout_rgba(Image.fromarray(img))
    assert pil.mode == "RGBA" and pil.size == (30, 40)
    assert client.cutout_rgba(np.stack([img, img])).shape == (2, 40, 30, 4)


# --- scenes and white main images -------------------------------------------------------------------


def test_product_scene_sends_a_photo_as_given(
    client: ProductClient, server: StudioServer, tmp_path: Path
) -> None:
    data = jpeg(photo())
    path = tmp_path / "p.jpg"
    path.write_bytes(data)
    for product in (path, str(path), data, bytearray(data)):
        images = client.product_scene(product, scene="auto", format="1080x1350", variants=3, encoding="WebP")
        assert len(images) == 3 and all(isinstance(b, bytes) for b in images)
        sent = server.inferences("product_scene")[-1]
        assert bytes(sent["product"][0]) == data
        assert {k: bytes(sent[k][0]).decode() for k in ("scene", "format", "encoding")} == {
            "scene": "auto",
            "format": "1080x1350",
            "encoding": "webp",
        }
        assert sent["variants"].tolist() == [3] and "class_id" not in sent


def test_product_scene_encodes_pil_and_arrays_losslessly(client: ProductClient, server: StudioServer) -> None:
    img = photo()
    client.product_scene(Image.fromarray(img))
    client.product_scene(img)
    for sent in server.inferences("product_scene"):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(bytes(sent["product"][0])))), img)


def test_product_scene_of_a_generated_product(client: ProductClient, server: StudioServer) -> None:
    client.product_scene(class_id="Handbags", seed=7, scene="white", format="2048x2048")
    sent = server.inferences("product_scene")[-1]
    assert sent["class_id"].tolist() == [7] and sent["seed"].tolist() == [7]  # Handbags is class 7
    assert sent["class_id"].shape == (1,) and "product" not in sent


def test_white_main_image_is_one_image_on_white(client: ProductClient, server: StudioServer) -> None:
    data = client.white_main_image(jpeg(photo()))
    assert isinstance(data, bytes) and data.startswith(b"\x89PNG")
    sent = server.inferences("product_scene")[-1]
    assert bytes(sent["scene"][0]) == b"white" and sent["variants"].tolist() == [1]
    assert bytes(sent["format"][0]) == b"2000x2000" and bytes(sent["encoding"][0]) == b"png"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"format": "999x999"}, "format '999x999' is not one of"),
        ({"encoding": "gif"}, "encoding 'gif'"),
        ({"variants": 9}, r"variants.*out of range \[1, 8\]"),
        ({"variants": 0}, "out of range"),
        ({"variants": True}, "variants must be an int"),
        ({"scene": " "}, "scene must be"),
        ({"scene": "x" * 65}, "64"),
        ({"product": None}, "give class_id"),
        ({"product": None, "class_id": "Ballgowns"}, "unknown class"),
        ({"product": b""}, "empty"),
        ({"product": b"x" * ((16 << 20) + 1)}, "16 MiB"),
        ({"product": 42}, "path, encoded bytes"),
        ({"product": "/no/such/photo.jpg"}, "cannot read"),
    ],
)
def test_product_scene_checks_arguments_before_sending(
    client: ProductClient, server: StudioServer, kwargs: dict[str, Any], message: str
) -> None:
    args = {"product": b"\xff\xd8 a jpeg"} | kwargs
    with pytest.raises(InvalidInputError, match=message):
        client.product_scene(**args)
    assert server.calls == []


def test_studio_formats_come_from_the_contract() -> None:
    assert ops.choices(PRODUCT_SCENE, "formats") == STUDIO_FORMATS
    assert set(AD_FORMATS) < set(STUDIO_FORMATS) and "2000x2000" in STUDIO_FORMATS
    assert ops.check_choice(PRODUCT_SCENE, "encodings", " JPG", "encoding") == "jpeg"


def test_scene_names_from_the_served_config() -> None:
    assert ProductClient(transport=StudioServer(scenes=["studio-white", "marble"])).scene_names() == (
        "studio-white",
        "marble",
    )
    assert ProductClient(transport=StudioServer()).scene_names() == ()
    assert ops.scene_names({"config": {"parameters": {"scenes": {"string_value": "not json"}}}}) == ()


def test_model_metadata_and_served_version() -> None:
    client = ProductClient(transport=StudioServer(versions=("1", "3", "2")))
    assert ops.latest_version(client.model_metadata("product_scene")) == "3"
    assert ops.latest_version({"versions": []}) is None


def test_last_endpoint_names_who_answered(server: StudioServer) -> None:
    client = ProductClient(["a:1", "b:1"], transport=server)
    seen = []
    for _ in range(4):
        client.cutout(photo())
        seen.append(client.last_endpoint())
    assert seen == ["a:1", "b:1", "a:1", "b:1"]


def test_async_client_has_the_studio_calls(server: StudioServer) -> None:
    async def go() -> tuple[Any, Any, Any]:
        async with AsyncProductClient(["a:1", "b:1"], transport=AsyncStudioServer(server)) as client:
            alpha = await client.cutout(photo())
            scenes = await client.product_scene(jpeg(photo()), scene="auto", variants=2)
            white = await client.white_main_image(class_id=3, seed=1)
            assert await client.scene_names() == ()
            return alpha, scenes, white

    alpha, scenes, white = asyncio.run(go())
    assert alpha.shape == (40, 30) and len(scenes) == 2 and isinstance(white, bytes)


# --- the label of a cut-out ----------------------------------------------------------------------------


def test_cutout_png_carries_the_xmp_label() -> None:
    rgba = np.dstack([photo(), fake_alpha(photo()[None])[0]])
    data = _images.encode_png(rgba, _images.xmp_packet(COMPOSITE, "ecomgen-client test"))
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGBA"
        xmp = im.info["XML:com.adobe.xmp"]
    assert "Iptc4xmpExt:DigitalSourceType" in xmp and COMPOSITE in xmp
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(data))), rgba)


def test_xmp_packet_matches_the_servers() -> None:
    provenance = pytest.importorskip("ecomgen.creative.provenance")
    ours = _images.xmp_packet(COMPOSITE, "ecomgen-client 1 & <co>")
    assert ours == provenance.xmp_packet(COMPOSITE, "ecomgen-client 1 & <co>")
    png = _images.encode_png(np.zeros((16, 16, 4), np.uint8), ours)
    assert provenance.xmp_source_type(provenance.read_xmp(png)) == COMPOSITE


# --- CLI ------------------------------------------------------------------------------------------------


@pytest.fixture
def cli_server(monkeypatch: pytest.MonkeyPatch) -> StudioServer:
    server = StudioServer()
    made: list[Any] = []

    def factory(url: Any, **kwargs: Any) -> ProductClient:
        made.append(url)
        return ProductClient(url, transport=server, **kwargs)

    monkeypatch.setattr(cli, "ProductClient", factory)
    server.urls = made  # type: ignore[attr-defined]
    return server


def test_cli_cutout_writes_a_labelled_rgba_png(cli_server: StudioServer, tmp_path: Path) -> None:
    src = tmp_path / "shoe.jpg"
    src.write_bytes(jpeg(photo(64, 48)))
    assert cli.main(["cutout", str(src), "--matte", str(tmp_path / "m.png")]) == 0
    with Image.open(tmp_path / "shoe_cutout.png") as im:
        assert im.mode == "RGBA" and im.size == (48, 64)
        assert (
            COMPOSITE in im.info["XML:com.adobe.xmp"] and "product_cutout v1" in im.info["XML:com.adobe.xmp"]
        )
    assert Image.open(tmp_path / "m.png").size == (48, 64)


def test_cli_scene_to_a_directory_and_to_files(cli_server: StudioServer, tmp_path: Path) -> None:
    src = tmp_path / "bag.jpg"
    src.write_bytes(jpeg(photo()))
    argv = ["scene", str(src), "--scene", "auto", "--format", "1080x1080", "--variants", "3"]
    assert cli.main([*argv, "--out", str(tmp_path / "scenes")]) == 0
    assert sorted(p.name for p in (tmp_path / "scenes").iterdir()) == [f"bag-auto-{k}.png" for k in (1, 2, 3)]
    assert cli.main(["scene", str(src), "--out", str(tmp_path / "main.png")]) == 0
    assert (tmp_path / "main.png").read_bytes().startswith(b"\x89PNG")
    assert cli.main(["scene", "--class", "Heels", "--seed", "3", "--out", str(tmp_path / "gen")]) == 0
    assert [p.name for p in (tmp_path / "gen").iterdir()] == ["heels_seed3-white-1.png"]


def test_cli_scene_bad_input(
    cli_server: StudioServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["scene", "--out", str(tmp_path / "x.png")]) == 2
    src = tmp_path / "p.jpg"
    src.write_bytes(jpeg(photo()))
    assert cli.main(["scene", str(src), "--format", "640x480", "--out", str(tmp_path / "x.png")]) == 2
    assert "not one of" in capsys.readouterr().err
    assert cli_server.calls == []


def test_cli_url_can_repeat(cli_server: StudioServer, tmp_path: Path) -> None:
    src = tmp_path / "p.jpg"
    src.write_bytes(jpeg(photo()))
    assert (
        cli.main(["scene", str(src), "--url", "a:1", "--url", "b:1,c:1", "--out", str(tmp_path / "o.png")])
        == 0
    )
    assert cli_server.urls == [["a:1", "b:1,c:1"]]  # type: ignore[attr-defined]


def test_build_parser_stays_short() -> None:
    assert len(inspect.getsource(cli.build_parser).splitlines()) < 80
    help_text = cli.build_parser().format_help()
    for command in ("cutout", "scene", "batch", "products", "ads", "tryon"):
        assert command in help_text


def test_json_of_contract_parameters_is_valid() -> None:
    params = dict(PRODUCT_SCENE.parameters)
    assert json.loads(params["formats"])[-1] == "2048x2048"


def test_cutout_png_labels_a_pil_cutout(client: ProductClient) -> None:
    from ecomgen_client.batch import cutout_png

    data = cutout_png(client.cutout_rgba(Image.fromarray(photo())), client)
    with Image.open(io.BytesIO(data)) as im:
        assert im.mode == "RGBA" and "product_cutout v1" in im.info["XML:com.adobe.xmp"]
