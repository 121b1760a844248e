"""Try-on networks: ONNX export parity per step, GridSample settings, CPU runtimes, the keep mask,
the TPS basis, training smoke."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from ecomgen.models import tryon as models
from ecomgen.models.tryon import ARMS, BACKGROUND, FEATHER, HEAD, L_GARMENT, L_OTHER, L_SKIN, LOWER, UPPER
from ecomgen.serving.runners import make_runner
from ecomgen.specs.tryon import TRYON
from export.onnx import check_parity, export_network, sample_inputs
from training import tryon
from training.image_metrics import ssim

WIDTHS = models.TINY_WIDTHS


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
    """Guards the parity test above: with these weights both the TPS and the refinement move pixels."""
    feeds = {k: torch.from_numpy(v) for k, v in sample_inputs(TRYON.network("tryon_warp"), 2).items()}
    _, _, flow, tps = tiny_pipe.warp(
        feeds["garment"],
        feeds["garment_mask"],
        models.agnostic(feeds["person"], torch.softmax(feeds["parse"], 1)),
        torch.softmax(feeds["layout"], 1),
    )
    assert tps.abs().mean() > 1e-3 and (flow - tps).abs().mean() > 1e-3


def test_tps_basis_reproduces_affine_maps_and_interpolates_its_control_points():
    basis = models.tps_basis(3, (64, 48)).double()
    ys, xs = (torch.arange(64) * 2 + 1) / 64 - 1, (torch.arange(48) * 2 + 1) / 48 - 1
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    t = torch.linspace(-0.9, 0.9, 3)
    cy, cx = torch.meshgrid(t, t, indexing="ij")
    for offsets, want in (
        (torch.ones(9), torch.ones_like(gx)),
        (cx.reshape(-1), gx),
        (0.5 * cy.reshape(-1), 0.5 * gy),
    ):
        assert torch.allclose(basis @ offsets.double(), want.reshape(-1).double(), atol=1e-6)
    bump = torch.zeros(9, dtype=torch.float64)
    bump[4] = 1  # the centre control point, at (0, 0): between pixels 31/32 and 23/24
    field = (basis @ bump).reshape(64, 48)
    assert field[31:33, 23:25].mean() > 0.95 and field[0, 0].abs() < 0.2


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
    for name in ("parse", "layout"):
        if name in feeds:
            feeds[name] = torch.softmax(torch.from_numpy(feeds[name]), 1).numpy()
    with torch.no_grad():
        ref = models.export_modules(tiny_pipe)[net.name](*(torch.from_numpy(a) for a in feeds.values()))
    ref = [ref] if isinstance(ref, torch.Tensor) else list(ref)
    got = runner.run(feeds)
    for tensor, r in zip(net.outputs, ref, strict=True):
        assert got[tensor.name].shape == tuple(r.shape)
        np.testing.assert_allclose(got[tensor.name], r.numpy(), atol=1e-3)


def _scene() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows: background, head, upper clothes, arms, lower body; the layout puts the new garment on
    the top half of the arms band and skin on its bottom half."""
    torch.manual_seed(1)
    person = torch.rand(1, 3, 256, 192) * 2 - 1
    parse = torch.zeros(1, 5, 256, 192)
    for region, (a, b) in ((BACKGROUND, (0, 60)), (HEAD, (60, 90)), (UPPER, (90, 150)), (ARMS, (150, 190))):
        parse[:, region, a:b] = 1
    parse[:, LOWER, 190:] = 1
    layout = torch.zeros(1, 3, 256, 192)
    layout[:, L_OTHER] = 1
    layout[:, :, 90:170] = 0
    layout[:, L_GARMENT, 90:170] = 1
    layout[:, L_SKIN, 170:190] = 1
    return person, parse, layout


def test_keep_mask_keeps_arms_the_new_garment_leaves_bare():
    _, parse, layout = _scene()
    keep = models.keep_mask(parse, layout)[0, 0, :, 0]
    assert keep[:88].eq(1).all() and keep[88:170].eq(0).all()  # old garment grown by GROW; new garment
    assert keep[172:].eq(1).all()  # bare arms and the lower body are kept
    old = models.keep_mask(parse, layout, keep_arms=False)[0, 0, :, 0]
    assert old[88:192].eq(0).all()  # v1's rule replaces every arm pixel


def test_feathered_keep_is_soft_inside_and_zero_outside():
    _, parse, layout = _scene()
    keep = models.keep_mask(parse, layout)
    soft = models.feather(keep)
    assert soft[keep == 0].eq(0).all()  # the worn garment never shows through
    column = soft[0, 0, :, 0]
    assert column[: 88 - 2 * FEATHER].eq(1).all() and 0 < column[87] < 1


def test_kept_regions_are_pasted_back_exactly(tiny_pipe):
    """Deep inside the kept region the output is the input photo; where the garment goes it is not."""
    person, parse, layout = _scene()
    warped, warped_mask = torch.rand(1, 3, 256, 192), torch.rand(1, 1, 256, 192)
    with torch.no_grad():
        out = tiny_pipe.synthesis(person, parse, layout, warped, warped_mask)
    keep = torch.zeros(256, dtype=torch.bool)
    keep[: 88 - 2 * FEATHER] = True
    keep[172 + 2 * FEATHER :] = True
    assert torch.allclose(out["image"][..., keep, :], person[..., keep, :], atol=1e-6)
    assert not torch.allclose(out["image"][..., 95:165, :], person[..., 95:165, :], atol=1e-2)
    assert out["mask"].min() >= 0 and out["mask"].max() <= 1


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
            "--layout-width",
            "8",
            "--batch-size",
            "2",
        ]
    )
    assert list((tmp_path / "run").glob("samples_*.png"))
    assert sorted(p.name for p in (tmp_path / "run").glob("tryon_*.safetensors")) == [
        f"tryon_{n}.safetensors" for n in sorted(models.NETWORKS)
    ]
    torch.manual_seed(0)
    pipe = models.build(WIDTHS).eval()
    models.save_checkpoints(pipe, tmp_path / "ckpt", {"widths": WIDTHS})
    loaded = models.pipeline_from_checkpoints(tmp_path / "ckpt")
    x = torch.rand(1, 3, 256, 192) * 2 - 1
    with torch.no_grad():
        # fp16 storage: close, not identical
        assert torch.allclose(loaded.parser(x), pipe.parser(x), atol=1e-2)
