"""Try-on networks: ONNX export parity per step, GridSample settings, CPU runtimes, training smoke."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ecomgen.models import tryon as models
from ecomgen.models.tryon import BACKGROUND, HEAD, LOWER, UPPER
from ecomgen.serving.runners import make_runner
from ecomgen.specs.tryon import TRYON
from export.onnx import check_parity, export_network, sample_inputs
from training import tryon
from training.image_metrics import ssim

WIDTHS = {"parser": 8, "warp": 8, "synthesis": 8}


@pytest.fixture(scope="module")
def tiny_pipe() -> models.TryOnPipeline:
    """Width 8, non-trivial BatchNorm stats, and a warp whose flow is far from the identity."""
    return models.tiny_pipeline()


@pytest.fixture(scope="module")
def exported(tiny_pipe, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tryon_onnx")
    modules = models.export_modules(tiny_pipe)
    return {
        net.name: export_network(modules[net.name], net, root / f"{net.name}.onnx") for net in TRYON.networks
    }


@pytest.mark.parametrize("net", TRYON.networks, ids=lambda n: n.name)
def test_each_network_matches_pytorch_after_export(tiny_pipe, exported, net):
    report = check_parity(models.export_modules(tiny_pipe)[net.name], net, exported[net.name], atol=1e-3)
    assert report.max_abs_diff < 1e-3  # GridSample turns ~1e-7 flow noise into ~1e-4


def test_warp_moves_pixels(tiny_pipe):
    """Guards the parity test above: with these weights the flow is far from the identity."""
    feeds = {k: torch.from_numpy(v) for k, v in sample_inputs(TRYON.network("tryon_warp"), 2).items()}
    _, _, flow = tiny_pipe.warp(
        feeds["garment"],
        feeds["garment_mask"],
        models.person_representation(feeds["person"], torch.softmax(feeds["parse"], 1)),
    )
    assert flow.abs().mean() > 1e-3


def test_gridsample_is_exported_as_trained(exported):
    model = onnx.load(str(exported["tryon_warp"]))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 16
    nodes = [n for n in model.graph.node if n.op_type == "GridSample"]
    assert len(nodes) == 2  # garment and mask
    for node in nodes:
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attrs["align_corners"] == int(models.GS_ALIGN_CORNERS)
        assert attrs["padding_mode"].decode() == models.GS_PADDING
        assert attrs["mode"].decode() == models.GS_MODE


@pytest.mark.parametrize("runtime", ["openvino-f32", "onnxruntime"])
@pytest.mark.parametrize("net", TRYON.networks, ids=lambda n: n.name)
def test_served_cpu_runtimes_match_pytorch(tiny_pipe, exported, net, runtime):
    runner = make_runner(exported[net.name], runtime, threads=1, max_batch=net.max_batch_size)
    feeds = sample_inputs(net, 5, seed=3)  # 5 = 4 + 1: OpenVINO runs it as two static chunks
    if "parse" in feeds:
        feeds["parse"] = torch.softmax(torch.from_numpy(feeds["parse"]), 1).numpy()
    with torch.no_grad():
        ref = models.export_modules(tiny_pipe)[net.name](*(torch.from_numpy(a) for a in feeds.values()))
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    got = runner.run(feeds)
    for tensor, r in zip(net.outputs, ref, strict=True):
        assert got[tensor.name].shape == tuple(r.shape)
        np.testing.assert_allclose(got[tensor.name], r.numpy(), atol=1e-3)


def test_kept_regions_are_pasted_back_exactly(tiny_pipe):
    """Where the parse says head / lower body / background, the output is the input photo."""
    torch.manual_seed(1)
    person = torch.rand(1, 3, 256, 192) * 2 - 1
    parse = torch.zeros(1, 5, 256, 192)
    parse[:, BACKGROUND, :60] = 1
    parse[:, HEAD, 60:90] = 1
    parse[:, UPPER, 90:180] = 1
    parse[:, LOWER, 180:] = 1
    warped, warped_mask = torch.rand(1, 3, 256, 192), torch.rand(1, 1, 256, 192)
    with torch.no_grad():
        image, m, _ = tiny_pipe.synthesis(person, parse, warped, warped_mask)
    keep = torch.ones(256, dtype=torch.bool)
    keep[90:180] = False
    assert torch.allclose(image[..., keep, :], person[..., keep, :], atol=1e-6)
    assert not torch.allclose(image[..., 90:180, :], person[..., 90:180, :], atol=1e-2)
    assert m.min() >= 0 and m.max() <= 1


def test_ssim_is_one_for_identical_images_and_lower_otherwise():
    a = torch.rand(2, 3, 64, 48)
    assert torch.allclose(ssim(a, a, data_range=1.0, padding=5), torch.ones(2), atol=1e-5)
    assert (ssim(a, a.flip(-1), data_range=1.0) < 0.5).all()


def test_ssim_keeps_the_pytorch_ssim_convention():
    """Zero padding 5 (same-size maps) is what the VITON papers report; it scores lower than
    valid filtering on images with content at the borders."""
    a = torch.rand(1, 3, 64, 48)
    b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    padded, valid = ssim(a, b, data_range=1.0, padding=5), ssim(a, b, data_range=1.0)
    assert not torch.allclose(padded, valid)


def test_training_dry_run_and_checkpoint_round_trip(tmp_path):
    tryon.main(
        [
            "--dataset",
            "fake",
            "--dry-run",
            "--out",
            str(tmp_path / "run"),
            "--parser-width",
            "8",
            "--warp-width",
            "8",
            "--synthesis-width",
            "8",
        ]
    )
    assert list((tmp_path / "run").glob("samples_*.png"))
    torch.manual_seed(0)
    pipe = models.build(WIDTHS).eval()
    models.save_checkpoints(pipe, tmp_path / "ckpt", {"widths": WIDTHS})
    loaded = models.pipeline_from_checkpoints(tmp_path / "ckpt")
    x = torch.rand(1, 3, 256, 192) * 2 - 1
    with torch.no_grad():
        # fp16 storage: close, not identical
        assert torch.allclose(loaded.parser(x), pipe.parser(x), atol=1e-2)
