"""The cut-out network: contract constants, shapes, range, batch independence, checkpoints, ONNX."""

from __future__ import annotations

import ast
import inspect
import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from ecomgen.models import cutout
from ecomgen.models.cutout import (
    CHECKPOINT_NAME,
    DEFAULT_CONFIG,
    INPUT,
    INPUT_HW,
    NETWORK,
    ONNX_OPSET,
    OUTPUT,
    CutoutNet,
    build,
    count_params,
    flops_per_image,
    load_checkpoint,
    load_networks,
    save_checkpoint,
    tiny_networks,
)

# The ops a TensorRT/OpenVINO-friendly graph may hold (BatchNorm is folded into Conv at export).
ALLOWED_OPS = {"Conv", "Relu", "Add", "Concat", "Resize", "Sigmoid", "Constant"}


@pytest.fixture(scope="module")
def tiny() -> CutoutNet:
    net = tiny_networks(seed=0)[NETWORK]
    assert isinstance(net, CutoutNet)
    return net


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, *INPUT_HW, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_contract_constants():
    assert NETWORK == "product_cutout_net" and INPUT == "image" and OUTPUT == "alpha"
    assert CHECKPOINT_NAME == "product_cutout"
    assert max(INPUT_HW) <= 320 and all(s % 32 == 0 for s in INPUT_HW)


def test_models_know_nothing_of_serving():
    tree = ast.parse(inspect.getsource(cutout))
    names = {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    names |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    banned = ("ecomgen.served", "ecomgen.serving", "ecomgen.specs", "ecomgen.creative")
    assert not [n for n in names if n.startswith(banned)]


def test_shipped_size_class():
    model = build(DEFAULT_CONFIG)
    assert count_params(model) < 2_000_000  # well under the 5 M budget
    assert flops_per_image(model, (64, 64)) * 16 < 3e9  # conv FLOPs scale with pixels; 64 px is quick


@pytest.mark.parametrize("n", [1, 3])
def test_shapes_and_range(tiny, n, torch_threads):
    with torch.no_grad():
        y = tiny(random_images(n))
    assert isinstance(y, torch.Tensor)
    assert y.shape == (n, 1, *INPUT_HW) and y.dtype == torch.float32
    assert torch.isfinite(y).all() and y.min() >= 0 and y.max() <= 1
    assert y.std() > 0  # the random weights do something


def test_batch_independent_in_eval_mode(tiny, torch_threads):
    x = random_images(4, seed=1)
    with torch.no_grad():
        together = tiny(x)
        alone = torch.cat([tiny(x[i : i + 1]) for i in range(4)])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)


def test_training_mode_returns_logits_and_side_outputs(torch_threads):
    model = build({"widths": [4, 4, 8, 8, 8], "head": 4}).train()
    logits, sides = model(random_images(2))
    assert logits.shape == (2, 1, *INPUT_HW)
    h, w = INPUT_HW
    assert [tuple(s.shape[-2:]) for s in sides] == [(h // 8, w // 8), (h // 4, w // 4), (h // 2, w // 2)]


def test_fp16_checkpoint_round_trip(tiny, tmp_path, torch_threads):
    save_checkpoint(tiny, tmp_path, {"command": "test"})
    assert (tmp_path / f"{CHECKPOINT_NAME}.safetensors").exists()
    loaded = load_networks(tmp_path)[NETWORK]
    assert isinstance(loaded, CutoutNet) and not loaded.training
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    x = random_images(2, seed=2)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), tiny(x), atol=2e-3, rtol=0)  # fp16 storage
    assert load_checkpoint(tmp_path).widths == tiny.widths


def test_onnx_round_trip_matches_torch(tiny, tmp_path, torch_threads):
    path = tmp_path / "cutout.onnx"
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            tiny,
            (random_images(1),),
            str(path),
            input_names=[INPUT],
            output_names=[OUTPUT],
            dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            opset_version=ONNX_OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    graph = onnx.load(str(path)).graph
    assert {n.op_type for n in graph.node} <= ALLOWED_OPS
    assert [i.name for i in graph.input] == [INPUT] and [o.name for o in graph.output] == [OUTPUT]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = random_images(3, seed=3)
    got = sess.run([OUTPUT], {INPUT: x.numpy()})[0]
    with torch.no_grad():
        ref = tiny(x).numpy()
    assert got.shape == ref.shape == (3, 1, *INPUT_HW)
    np.testing.assert_allclose(got, ref, atol=1e-4)
