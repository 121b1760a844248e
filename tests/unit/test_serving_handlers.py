"""The serving steps in-process, from the generated configs, against PyTorch references.

``load_step`` builds a step exactly as the ``ecomgen`` backend does (the generated
config, the handler it names, the ONNX files beside it), so the fused cpu model and the
chain of ensemble steps can be compared without a server.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from google.protobuf import json_format
from PIL import Image

from ecomgen.creative import provenance
from ecomgen.creative.images import decode, encode, fit
from ecomgen.errors import RequestError
from ecomgen.numerics import to_uint8_hwc
from ecomgen.registry import REGISTRY
from ecomgen.serving.handlers import load_handler
from ecomgen.serving.handlers.tryon import HEIGHT, WIDTH, garment_mask, preprocess
from ecomgen.serving.step import Request, Step, StepConfig, run_batch
from ecomgen.spec import wire
from export.onnx import export_model, install_onnx, tiny_modules
from export.repository import repository_models, write_repository


def load_step(root: Path, target: str, name: str) -> Step:
    (model,) = [m for m in repository_models(target) if m.name == name]
    config = json_format.MessageToDict(model.config, preserving_proto_field_name=True)
    step_config = StepConfig.from_model_config(config, root / target / name / "1")
    return load_handler(step_config.params["handler"])(step_config)


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, torch.nn.Module]]]:
    """The cpu repository with every registered network exported from tiny random weights."""
    root = tmp_path_factory.mktemp("repo")
    onnx_dir = root / "onnx"
    write_repository(root, "cpu")
    modules = {}
    torch.set_num_threads(1)
    for model in REGISTRY:
        if model.networks:
            modules[model.name] = tiny_modules(model)
            export_model(model, onnx_dir, modules[model.name])
    install_onnx(root, onnx_dir)
    return root, modules


def encoded(image: np.ndarray, fmt: str = "PNG", **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format=fmt, **kw)
    return buf.getvalue()


# --- image I/O ------------------------------------------------------------------------


def test_decode_valid_jpeg_png_webp():
    image = np.random.default_rng(0).integers(0, 255, (120, 90, 3), np.uint8)
    assert (decode("person", encoded(image), 64, 2048) == image).all()
    assert decode("person", encoded(image, "JPEG"), 64, 2048).shape == (120, 90, 3)
    assert decode("person", encoded(image, "WEBP"), 64, 2048).shape == (120, 90, 3)
    assert decode("garment", encoded(image[..., 0]), 64, 2048).shape == (120, 90, 3)  # grey -> RGB


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x00garbage\xff" * 10, "not a decodable"),
        (encoded(np.zeros((80, 80, 3), np.uint8))[:60], "not a decodable"),  # truncated PNG
        (encoded(np.zeros((3000, 70, 3), np.uint8)), "3000x70 pixels"),
        (encoded(np.zeros((80, 80, 3), np.uint8), "GIF"), "not a decodable JPEG/PNG/WEBP"),
        (encoded(np.zeros((80, 80, 3), np.uint8), "BMP"), "not a decodable"),
        (encoded(np.zeros((80, 80, 3), np.uint8), "TIFF"), "not a decodable"),
    ],
)
def test_decode_rejects_bad_bytes_with_a_clear_error(data, message):
    with pytest.raises(RequestError, match=message):
        decode("person", data, 64, 2048)


def test_decode_rejects_a_lying_header_before_allocating():
    """A PNG whose header claims 60000x60000 (a decompression bomb) is refused from the header."""
    png = bytearray(encoded(np.zeros((80, 80, 3), np.uint8)))
    png[16:24] = (60000).to_bytes(4, "big") + (60000).to_bytes(4, "big")  # IHDR width, height
    with pytest.raises(RequestError, match=r"60000x60000 pixels|not a decodable"):
        decode("person", bytes(png), 64, 2048)


def test_decode_rejects_animations():
    frames = [Image.new("RGB", (80, 80), c) for c in ("red", "blue")]
    buf = io.BytesIO()
    frames[0].save(buf, format="WEBP", save_all=True, append_images=frames[1:])
    with pytest.raises(RequestError, match="animation"):
        decode("person", buf.getvalue(), 64, 2048)


def test_encode_round_trips_and_fit_pads():
    image = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH, 3), np.uint8)
    assert (decode("image", encode(image, "png"), 64, 2048) == image).all()
    wide = np.zeros((100, 400, 3), np.uint8)
    out = fit(wide, HEIGHT, WIDTH)
    assert out.shape == (HEIGHT, WIDTH, 3)
    assert (out[0] == 255).all() and (out[HEIGHT // 2] == 0).all()


# --- try-on preprocessing --------------------------------------------------------------


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


def test_tryon_steps_check_bounds_from_the_contract(tiny_repo):
    root, _ = tiny_repo
    pre = load_step(root, "cpu", "tryon_pre")
    person = np.zeros((1, 100, 80, 3), np.uint8)
    results = run_batch(
        pre,
        [
            Request({"person": person, "garment": person}),
            Request({"person": np.zeros((1, 63, 80, 3), np.uint8), "garment": person}),
            Request({"person": np.zeros((1, 100, 80, 4), np.uint8), "garment": person}),
            Request({"person": person.astype(np.float32), "garment": person}),
        ],
    )
    assert results[0]["garment_mask"].shape == (1, 1, HEIGHT, WIDTH)
    assert "axis 1 is 63" in str(results[1])
    assert "shape [1, 100, 80, 4]" in str(results[2])
    assert "dtype float32" in str(results[3])


def test_every_internal_step_rejects_nan(tiny_repo):
    """Internal steps are callable directly by any client; NaN must not pass any of them."""
    root, _ = tiny_repo
    for model in repository_models("cpu"):
        cfg = model.config
        if cfg.platform == "ensemble":
            continue
        step = load_step(root, "cpu", cfg.name)
        floats = [n for n, i in step.config.inputs.items() if i.dtype.kind == "f" and not i.optional]
        if not floats:
            continue
        arrays = {}
        for name, t in step.config.inputs.items():
            if t.optional:
                continue
            # Variable dims at their smallest legal size; a batch axis only where the step has one.
            low = t.min_dims or (0,) * len(t.dims)
            dims = [d if d > 0 else max(1, lo) for d, lo in zip(t.dims, low, strict=True)]
            shape = [1, *dims] if step.config.batched else dims
            if t.dtype == np.object_:
                arrays[name] = np.full(shape, b"", dtype=object)
            else:  # in range, so the NaN is the first problem the step finds
                arrays[name] = np.full(shape, t.value_range[0] if t.value_range else 0, t.dtype)
        arrays[floats[0]].reshape(-1)[0] = np.nan
        (result,) = run_batch(step, [Request(arrays)])
        assert isinstance(result, RequestError) and "NaN" in str(result), cfg.name


# --- models in-process: fused cpu model == ensemble chain == PyTorch ------------------------


def _chain(root: Path, model_name: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run the steps of an ensemble one after another, wired as the generated ensemble wires them."""
    model = REGISTRY[model_name]
    scope = dict(inputs)
    for w in wire(model):
        step = load_step(root, "cpu", w.step.model_name)
        (out,) = run_batch(step, [Request({k: scope[v] for k, v in w.input_map.items()})])
        assert not isinstance(out, Exception), out
        scope.update({v: out[k] for k, v in w.output_map.items()})
    return {t.name: scope[t.name] for t in model.contract.outputs if t.name in scope}


def test_fused_product_gan_matches_pytorch_and_the_step_chain(tiny_repo, monkeypatch):
    from ecomgen.models.product_gan import generate

    root, modules = tiny_repo
    monkeypatch.setenv("ECOMGEN_CPU_RUNTIME", "onnxruntime")
    classes, seeds = np.array([[0], [3], [9]], np.int32), np.array([[5], [6], [7]], np.int64)
    fused = load_step(root, "cpu", "product_gan")
    (out,) = run_batch(fused, [Request({"class_id": classes, "seed": seeds})])
    ref = to_uint8_hwc(generate(modules["product_gan"]["product_gan_generator"], classes[:, 0], seeds[:, 0]))
    assert np.abs(out["image"].astype(int) - ref.astype(int)).max() <= 1
    # The gpu target's separate Python steps around the same network give the same pixels.
    from ecomgen.serving.runners import OnnxRuntimeRunner

    (pre,) = run_batch(
        load_step(root, "gpu", "product_gan_pre"), [Request({"class_id": classes, "seed": seeds})]
    )
    deadline = pre.pop("deadline_ns")  # the first step stamps the request's deadline
    generated = OnnxRuntimeRunner(root / "onnx" / "product_gan_generator.onnx").run(pre)
    post_step = load_step(root, "gpu", "product_gan_post")
    (post,) = run_batch(post_step, [Request({**generated, "deadline_ns": deadline})])
    np.testing.assert_array_equal(post["image"], out["image"])


def test_tryon_chain_matches_the_pytorch_pipeline(tiny_repo, monkeypatch):
    from ecomgen.models.tryon import tiny_pipeline

    root, _ = tiny_repo
    monkeypatch.setenv("ECOMGEN_CPU_RUNTIME", "onnxruntime")
    rng = np.random.default_rng(0)
    person = rng.integers(0, 255, (1, 300, 200, 3), np.uint8)
    garment = np.full((1, 256, 192, 3), 255, np.uint8)
    garment[0, 60:200, 40:150] = (200, 30, 30)
    served = _chain(root, "tryon", {"person": person, "garment": garment})
    prepared = preprocess(person[0], garment[0])
    with torch.no_grad():
        ref = tiny_pipeline()(
            *(torch.from_numpy(prepared[k][None]) for k in ("person", "garment", "garment_mask"))
        )
    expected = to_uint8_hwc(ref["image"].numpy())
    assert served["image"].shape == (1, HEIGHT, WIDTH, 3)
    assert np.abs(served["image"].astype(int) - expected.astype(int)).max() <= 2
    # The bytes twin decodes and encodes around the same networks.
    blobs = {
        k: np.array([[encoded(v[0])]], dtype=object) for k, v in (("person", person), ("garment", garment))
    }
    png = _chain(root, "tryon_bytes", blobs)["image"][0, 0]
    # The PNG carries the invisible watermark, not a different image: the mark costs ~40 dB on
    # photos (benchmarks/results/watermark-robustness.md), a little more on this noisy tiny output.
    decoded = decode("image", png, 64, 2048)
    assert provenance.psnr(decoded, expected[0]) >= 34.0
    assert provenance.decode_watermark(decoded).found


def test_onnx_files_are_placed_where_the_configs_point(tiny_repo):
    root, _ = tiny_repo
    placed = [
        root / "cpu" / m.name / "1" / f"{net}.onnx" for m in repository_models("cpu") for net in m.networks
    ]
    assert placed and all(p.is_file() for p in placed)
