"""The x4 SR network: shapes, size class, ONNX / OpenVINO parity, PixelShuffle and residual in ONNX."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F

from ecomgen.models.sr import (
    DEFAULT_CONFIG,
    ESPCN,
    INPUT,
    OUTPUT,
    STEP,
    SRNet,
    count_params,
    flops_per_image,
    tiny_networks,
    to_uint8,
    to_unit_range,
)
from training.sr_eval import export_onnx

# The ops a TensorRT-friendly graph may hold (Constant/Shape only as initialiser plumbing).
ALLOWED_OPS = {"Conv", "LeakyRelu", "Add", "DepthToSpace", "Resize", "Constant"}


@pytest.fixture(scope="module")
def tiny() -> torch.nn.Module:
    return tiny_networks(seed=0)[STEP]


@pytest.fixture(scope="module")
def tiny_onnx(tiny, tmp_path_factory) -> str:
    return str(export_onnx(tiny, tmp_path_factory.mktemp("sr") / "sr.onnx"))


def zero_body(model: SRNet) -> SRNet:
    """The same network with its learned branch silenced: only the global residual is left."""
    torch.nn.init.zeros_(model.up.weight)
    torch.nn.init.zeros_(model.up.bias)
    return model.eval()


@pytest.mark.parametrize("n,h,w", [(1, 16, 16), (2, 17, 23), (3, 64, 48), (1, 16, 512), (2, 33, 16)])
def test_shapes(tiny, n, h, w, torch_threads):
    x = torch.rand(n, 3, h, w) * 2 - 1
    with torch.no_grad():
        y = tiny(x)
    assert isinstance(y, torch.Tensor)
    assert y.shape == (n, 3, 4 * h, 4 * w) and y.dtype == torch.float32
    assert torch.isfinite(y).all()


def test_batch_independent(tiny, torch_threads):
    x = torch.rand(4, 3, 20, 16) * 2 - 1
    with torch.no_grad():
        batched, alone = tiny(x), torch.cat([tiny(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_full_size_in_declared_class(torch_threads):
    model = SRNet(**DEFAULT_CONFIG)
    params, flops = count_params(model), flops_per_image(model, 64, 48)
    assert 150_000 <= params <= 600_000, params  # "a few hundred thousand"
    assert 1e9 <= flops <= 4e9, flops  # 1-4 GFLOP (2 x MACs) per 64x48 input
    # FlopCounterMode counts 2 x MACs: check against the hand count of the convolutions.
    c, b = DEFAULT_CONFIG["channels"], DEFAULT_CONFIG["blocks"]
    macs_per_px = 9 * (3 * c + (2 * b + 1) * c * c + c * 48)
    assert flops == 2 * macs_per_px * 64 * 48
    espcn = ESPCN()
    assert count_params(espcn) < 50_000 and flops_per_image(espcn) < 0.3e9


def test_zero_body_is_bilinear_and_stays_in_range(torch_threads):
    """With the learned branch silent the output is the bilinear upsample, a convex blend of
    input pixels: in [-1, 1] for inputs in [-1, 1], constants stay exact through uint8."""
    model = zero_body(tiny_networks(seed=1)[STEP])
    x = torch.rand(2, 3, 12, 10) * 2 - 1
    with torch.no_grad():
        y = model(x)
    torch.testing.assert_close(y, F.interpolate(x, scale_factor=4, mode="bilinear", align_corners=False))
    assert float(y.min()) >= -1 and float(y.max()) <= 1
    u8 = torch.tensor([0, 1, 127, 128, 254, 255], dtype=torch.uint8).view(6, 1, 1, 1).expand(6, 5, 4, 3)
    with torch.no_grad():
        back = to_uint8(model(to_unit_range(u8.contiguous())))
    assert back.shape == (6, 20, 16, 3)
    assert torch.equal(back, u8[:, :1, :1].expand(6, 20, 16, 3))


def test_served_conversion_clips(tiny, torch_threads):
    """Raw outputs may leave [-1, 1]; the served conversion clips instead of wrapping around."""
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).view(1, 1, 1, 5).expand(1, 3, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_onnx_graph_is_dynamic_and_plain(tiny_onnx):
    graph = onnx.load(tiny_onnx).graph
    ops = {node.op_type for node in graph.node}
    assert ops <= ALLOWED_OPS, ops - ALLOWED_OPS
    assert {"Conv", "DepthToSpace", "Resize", "Add"} <= ops
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == INPUT and out.name == OUTPUT
    for value in (inp, out):
        dims = value.type.tensor_type.shape.dim
        assert [d.dim_value for d in dims][1] == 3
        assert all(dims[i].dim_param for i in (0, 2, 3)), f"{value.name}: batch/H/W must be dynamic"
    resize = next(n for n in graph.node if n.op_type == "Resize")
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in resize.attribute}
    assert attrs["mode"] == b"linear" and attrs["coordinate_transformation_mode"] == b"half_pixel"
    d2s = next(n for n in graph.node if n.op_type == "DepthToSpace")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in d2s.attribute}["mode"] == b"CRD"


def test_onnxruntime_parity_two_sizes_one_session(tiny, tiny_onnx, torch_threads):
    sess = ort.InferenceSession(tiny_onnx, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for shape in ((2, 3, 16, 24), (3, 3, 41, 18)):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        (got,) = sess.run([OUTPUT], {INPUT: x})
        with torch.no_grad():
            ref = tiny(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape == (shape[0], 3, 4 * shape[2], 4 * shape[3])
        assert np.abs(got - ref).max() < 1e-4


def test_openvino_parity(tiny, tiny_onnx, torch_threads):
    ov = pytest.importorskip("openvino")
    core = ov.Core()
    compiled = core.compile_model(core.read_model(tiny_onnx), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    rng = np.random.default_rng(1)
    for shape in ((1, 3, 16, 16), (2, 3, 24, 36)):
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        got = np.array(compiled.create_infer_request().infer({INPUT: x})[OUTPUT])
        with torch.no_grad():
            ref = tiny(torch.from_numpy(x)).numpy()
        assert got.shape == ref.shape
        assert np.abs(got - ref).max() < 1e-4


def test_onnx_zero_body_reproduces_the_upsampled_input(tmp_path, torch_threads):
    """In ONNX Runtime, a body that outputs zeros leaves exactly the bilinear upsample of the input."""
    model = zero_body(tiny_networks(seed=2)[STEP])
    sess = ort.InferenceSession(
        str(export_onnx(model, tmp_path / "zero.onnx")), providers=["CPUExecutionProvider"]
    )
    x = np.random.default_rng(2).uniform(-1, 1, (2, 3, 19, 13)).astype(np.float32)
    (got,) = sess.run([OUTPUT], {INPUT: x})
    ref = F.interpolate(torch.from_numpy(x), scale_factor=4, mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    assert np.array_equal(to_uint8(torch.from_numpy(got)).numpy(), to_uint8(torch.from_numpy(ref)).numpy())


def test_onnx_pixelshuffle_layout(tmp_path, torch_threads):
    """PixelShuffle exports as DepthToSpace CRD: out[c, 4h+i, 4w+j] = in[16c + 4i + j, h, w]."""
    model = zero_body(tiny_networks(seed=3)[STEP])
    # Make the learned branch emit a known pattern: a constant per channel (via the bias) whose
    # value encodes (c, i, j), on a zero input whose bilinear residual is zero.
    codes = torch.arange(48, dtype=torch.float32) / 100.0
    with torch.no_grad():
        model.up.bias.copy_(codes)
    sess = ort.InferenceSession(
        str(export_onnx(model, tmp_path / "ps.onnx")), providers=["CPUExecutionProvider"]
    )
    (got,) = sess.run([OUTPUT], {INPUT: np.zeros((1, 3, 3, 5), np.float32)})
    expected = np.empty((1, 3, 12, 20), np.float32)
    for c in range(3):
        for i in range(4):
            for j in range(4):
                expected[0, c, i::4, j::4] = codes[16 * c + 4 * i + j]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
