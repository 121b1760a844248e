"""Provenance: XMP per encoding, C2PA sign/verify with a generated certificate, the watermark under
JPEG 75 and a 0.5x resize, and ``ecomgen verify``."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecomgen.creative import provenance as P
from ecomgen.creative.ads import render_ad, validate_ad_fields
from tests.c2pa_certs import SigningIdentity, make_test_identity

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
ENCODINGS = ("jpeg", "png", "webp")


@pytest.fixture(scope="module")
def identity() -> SigningIdentity:
    return make_test_identity()


@pytest.fixture(scope="module")
def signer(identity: SigningIdentity) -> P.C2paSigner:
    return P.C2paSigner(P.SignerConfig(identity.chain_pem, identity.key_pem, "es256"))


@pytest.fixture(scope="module")
def viton() -> np.ndarray:
    return np.asarray(Image.open(FIXTURES / "viton" / "test" / "image" / "000010_0.jpg").convert("RGB"))


@pytest.fixture(scope="module")
def ad() -> np.ndarray:
    img = Image.open(FIXTURES / "fashion-products" / "images" / "2697.jpg").convert("RGB")
    product = np.asarray(img.resize((192, 256), Image.Resampling.LANCZOS))
    f = validate_ad_fields(
        title="Linen summer dress", price="49.90", currency="EUR", badge="NEW", cta="Shop now"
    )
    return render_ad(product, f, 0)


def jpeg(a: np.ndarray, q: int = 75) -> np.ndarray:
    b = io.BytesIO()
    Image.fromarray(a).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(b).convert("RGB"))


def half(a: np.ndarray) -> np.ndarray:
    im = Image.fromarray(a)
    return np.asarray(im.resize((im.width // 2, im.height // 2), Image.Resampling.BICUBIC))


# --------------------------------------------------------------------------------------------- XMP


@pytest.mark.parametrize("encoding", ENCODINGS)
@pytest.mark.parametrize("source", P.AI_SOURCE_TYPES)
def test_xmp_round_trip(viton: np.ndarray, encoding: str, source: str) -> None:
    data = P.encode_labelled(viton, encoding, source)  # type: ignore[arg-type]
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}[encoding]
        assert im.size == (192, 256)
    assert P.xmp_source_type(P.read_xmp(data)) == source
    # The XMP sits where other tools look for it.
    marker = {"jpeg": b"http://ns.adobe.com/xap/1.0/\x00", "png": b"iTXtXML:com.adobe.xmp", "webp": b"XMP "}
    assert marker[encoding] in data


def test_xmp_parsing_edge_cases() -> None:
    assert P.xmp_source_type(None) is None
    assert P.xmp_source_type(b"not xml") is None
    element_form = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        b'<rdf:Description xmlns:Iptc4xmpExt="http://iptc.org/std/Iptc4xmpExt/2008-02-29/">'
        b'<Iptc4xmpExt:DigitalSourceType rdf:resource="http://cv.iptc.org/newscodes/digitalsourcetype/'
        b'trainedAlgorithmicMedia"/></rdf:Description></rdf:RDF></x:xmpmeta>'
    )
    assert P.xmp_source_type(element_form) == P.TRAINED_ALGORITHMIC_MEDIA


def test_encode_rejects_unknown_values(viton: np.ndarray) -> None:
    with pytest.raises(ValueError):
        P.encode_labelled(viton, "gif")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        P.encode_labelled(viton, "png", "http://cv.iptc.org/newscodes/digitalsourcetype/digitalCapture")


# -------------------------------------------------------------------------------------------- C2PA


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_c2pa_sign_and_verify(
    viton: np.ndarray, signer: P.C2paSigner, identity: SigningIdentity, encoding: str
) -> None:
    data = P.encode_labelled(viton, encoding, P.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA, signer=signer)  # type: ignore[arg-type]
    r = P.verify(data)
    assert r.c2pa.state == "valid", r.c2pa
    assert r.c2pa.source_type == P.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA
    assert r.c2pa.signer == "ecomgen test signer" and r.c2pa.claim_generator.startswith("ecomgen ")  # type: ignore[union-attr]
    assert r.xmp_source_type == P.COMPOSITE_WITH_TRAINED_ALGORITHMIC_MEDIA  # signing keeps our XMP
    assert r.watermark is not None and r.watermark.found
    assert r.ok
    # With the test CA as a trust anchor the chain is trusted, not just valid.
    assert P.verify(data, identity.ca_pem.decode()).c2pa.state == "trusted"


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_tampered_file_fails_verification(viton: np.ndarray, signer: P.C2paSigner, encoding: str) -> None:
    data = bytearray(P.encode_labelled(viton, encoding, signer=signer))  # type: ignore[arg-type]
    # Change one byte of image data near the end of the file (the manifest sits near the start).
    i = len(data) - 64
    data[i] ^= 0x01
    r = P.verify(bytes(data))
    assert r.c2pa.state in ("invalid", "error"), r.c2pa
    assert not r.ok


def test_unsigned_file_has_no_manifest(viton: np.ndarray) -> None:
    r = P.verify(P.encode_labelled(viton, "png"))
    assert r.c2pa.state == "absent" and not r.ok
    assert r.xmp_source_type == P.TRAINED_ALGORITHMIC_MEDIA and r.watermark is not None and r.watermark.found


def test_signer_from_env(identity: SigningIdentity, tmp_path: Path) -> None:
    chain, key, _ = identity.write(tmp_path)
    assert P.signer_from_env({}) is None
    with pytest.raises(ValueError, match="both"):
        P.signer_from_env({P.ENV_CERT: str(chain)})
    with pytest.raises(ValueError, match=P.ENV_ALG):
        P.signer_from_env({P.ENV_CERT: str(chain), P.ENV_KEY: str(key), P.ENV_ALG: "md5"})
    cfg = P.signer_from_env({P.ENV_CERT: str(chain), P.ENV_KEY: str(key)})
    assert cfg is not None and cfg.alg == "es256" and cfg.tsa_url is None  # inferred from the P-256 key
    s = P.C2paSigner(cfg)
    assert "ON" in P.manifest_status(s) and "ecomgen test signer" in P.manifest_status(s)
    assert "OFF" in P.manifest_status(None) and P.ENV_CERT in P.manifest_status(None)


def test_bad_key_fails_at_startup(identity: SigningIdentity) -> None:
    other = make_test_identity()
    with pytest.raises(Exception):  # noqa: B017 - c2pa raises its own error types
        s = P.C2paSigner(P.SignerConfig(identity.chain_pem, b"not a key", "es256"))
        s.sign(P.encode_labelled(np.zeros((64, 64, 3), np.uint8), "png"), "png", P.TRAINED_ALGORITHMIC_MEDIA)
    # A key that does not match the certificate signs, but the manifest does not verify.
    mismatched = P.C2paSigner(P.SignerConfig(identity.chain_pem, other.key_pem, "es256"))
    try:
        data = mismatched.sign(
            P.encode_labelled(np.full((64, 64, 3), 200, np.uint8), "png"), "png", P.TRAINED_ALGORITHMIC_MEDIA
        )
    except Exception:
        return
    assert P.verify(data).c2pa.state in ("invalid", "error")


# --------------------------------------------------------------------------------------- watermark


def test_payload_has_a_valid_checksum() -> None:
    bits = P.PAYLOAD
    assert len(bits) == P.PAYLOAD_BITS == 48
    assert P._crc8(bits[:40]) == int("".join(map(str, bits[40:])), 2)
    assert 16 <= int(bits.sum()) <= 32  # balanced, so no colour bias


@pytest.mark.parametrize(
    "attack",
    [
        ("none", lambda a: a),
        ("jpeg75", jpeg),
        ("half", half),
        ("half+jpeg75", lambda a: jpeg(half(a))),
    ],
    ids=lambda x: x[0],
)
def test_watermark_survives_on_a_1080_creative(ad: np.ndarray, attack) -> None:
    marked = P.embed_watermark(ad)
    assert P.psnr(ad, marked) > 38
    r = P.decode_watermark(attack[1](marked))
    assert r.found and r.agreement >= 0.95, r


@pytest.mark.parametrize("attack", [("jpeg75", jpeg), ("half", half)], ids=lambda x: x[0])
def test_watermark_survives_on_256x192(viton: np.ndarray, attack) -> None:
    r = P.decode_watermark(attack[1](P.embed_watermark(viton)))
    assert r.found, r


def test_unmarked_images_are_not_detected(ad: np.ndarray, viton: np.ndarray) -> None:
    for img in (ad, viton, jpeg(ad), half(viton)):
        r = P.decode_watermark(img)
        assert not r.found and r.agreement < P.FOUND_AGREEMENT


def test_watermark_only_changes_luma(viton: np.ndarray) -> None:
    marked = P.embed_watermark(viton).astype(int)
    d = marked - viton.astype(int)
    inner = (marked > 0).all(axis=2) & (marked < 255).all(axis=2)  # where no channel clipped
    assert np.abs(d[..., 0] - d[..., 1])[inner].max() <= 1 and np.abs(d[..., 1] - d[..., 2])[inner].max() <= 1


# ------------------------------------------------------------------------------------ ecomgen verify


def test_verify_cli(
    tmp_path: Path, viton: np.ndarray, signer: P.C2paSigner, capsys: pytest.CaptureFixture[str]
) -> None:
    from ecomgen.verify import main

    good = tmp_path / "good.jpg"
    good.write_bytes(P.encode_labelled(viton, "jpeg", signer=signer))
    assert main([str(good)]) == 0
    out = capsys.readouterr().out
    assert P.TRAINED_ALGORITHMIC_MEDIA in out
    assert "C2PA manifest: valid" in out and "ecomgen test signer" in out
    assert "watermark: found (48/48" in out or "watermark: found (4" in out
    plain = tmp_path / "plain.png"
    Image.fromarray(viton).save(plain)
    assert main([str(good), str(plain)]) == 1
    out = capsys.readouterr().out
    assert (
        "XMP DigitalSourceType: absent" in out
        and "C2PA manifest: absent" in out
        and "watermark: absent" in out
    )
    assert main([str(tmp_path / "missing.png")]) == 2


def test_serving_modules_need_only_the_serving_image_packages() -> None:
    """No torch (Triton's Python backend), and nothing the serving image lacks: no SciPy, PyWavelets or
    fontTools, even after a render, a label and a verify."""
    code = "\n".join(
        [
            "import sys, numpy as np",
            "from ecomgen.creative import ads, inventory, provenance, text",
            "import ecomgen.verify",
            "f = ads.validate_ad_fields(title='Sale 夏季', price='9.99', currency='EUR', badge='NEW')",
            "img = ads.render_ad(np.full((256, 192, 3), 200, np.uint8), f, 0)",
            "provenance.verify(provenance.encode_labelled(img, 'png'))",
            "bad = [m for m in ('torch', 'imwatermark', 'scipy', 'pywt', 'fontTools') if m in sys.modules]",
            "print(bad); sys.exit(1 if bad else 0)",
        ]
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_haar_ll_matches_pywavelets() -> None:
    """The watermark's direct LL computation is PyWavelets' orthonormal Haar DWT, LL band."""
    import pywt

    y = np.random.default_rng(0).random((203, 317)) * 255
    for level in (1, 2, 3):
        ll = P.haar_ll(y, level)
        ref = pywt.wavedec2(y, "haar", level=level)[0][: ll.shape[0], : ll.shape[1]]
        np.testing.assert_allclose(ll, ref, atol=1e-9)


def test_dct4_matches_scipy() -> None:
    from scipy.fft import dctn, idctn

    x = np.random.default_rng(1).random((3, 5, 4, 4))
    np.testing.assert_allclose(P._dct4(x), dctn(x, axes=(2, 3), norm="ortho"), atol=1e-12)
    np.testing.assert_allclose(P._idct4(P._dct4(x)), x, atol=1e-12)
    np.testing.assert_allclose(P._idct4(x), idctn(x, axes=(2, 3), norm="ortho"), atol=1e-12)


def test_keep_white_leaves_the_background_pure_white_and_marks_the_product() -> None:
    """A marketplace main image: RGB 255 stays 255 after the watermark, the product carries the mark,
    and the caller's array is not touched."""
    rng = np.random.default_rng(3)
    image = np.full((768, 768, 3), 255, np.uint8)
    image[96:672, 160:608] = rng.integers(40, 220, (576, 448, 3), dtype=np.uint8)
    image[0, 0] = (255, 255, 254)  # near-white is product, not background
    before = image.copy()
    out = np.asarray(Image.open(io.BytesIO(P.encode_labelled(image, "png", keep_white=True))).convert("RGB"))
    white = (before == 255).all(axis=2)
    assert (out[white] == 255).all()
    marked = P.embed_watermark(before)
    assert (out[~white] == marked[~white]).all()
    assert (out[96:672, 160:608] != before[96:672, 160:608]).any()
    assert (image == before).all()
