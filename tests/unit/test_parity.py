"""The FP16 parity gate: its metrics, its inputs, and that it passes good and rejects broken FP16 runs."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ecomgen.numerics import psnr_uint8
from ecomgen.specs.product_gan import GENERATOR
from ecomgen_client.contracts import TensorSpec
from export.onnx import export_network
from export.parity import (
    OnnxRuntimeRunner,
    ParityGateError,
    Thresholds,
    TorchRunner,
    compare,
    frac_pixels_over,
    gate_inputs,
    main,
    run_gate,
    torch_fp16_runner,
)

NET = GENERATOR
IMAGE = NET.output("image")
BATCHES = (1, 5)  # the default (1, 32, 64) works too, but tests stay fast on a busy 2-core box


def overflowing_generator(g: torch.nn.Module, k: float = 2.0**20) -> torch.nn.Module:
    """Same images in fp32, inf/NaN in fp16: the activations entering ``final_norm`` are k times
    larger (> 65504) and its running stats are scaled to compensate (mean * k, var * k**2)."""
    g = copy.deepcopy(g)
    with torch.no_grad():
        last = g.blocks[-1].conv
        last.weight.mul_(k)
        last.bias.mul_(k)
        g.final_norm.running_mean.mul_(k)
        g.final_norm.running_var.mul_(k * k)
    return g


@pytest.fixture
def reference(tiny_generator, tmp_path, torch_threads) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(export_network(tiny_generator, NET, tmp_path / "g.onnx"))


# --- metrics (pure numpy) ---------------------------------------------------------------


def test_psnr_of_identical_images_is_infinite():
    a = np.random.default_rng(0).integers(0, 256, (2, 8, 6, 3), dtype=np.uint8)
    assert psnr_uint8(a, a.copy()) == math.inf


def test_psnr_matches_the_definition():
    a = np.zeros((1, 4, 4, 3), np.uint8)
    assert psnr_uint8(a, a + 1) == pytest.approx(20 * math.log10(255))  # MSE 1: 48.13 dB
    b = a.copy()
    b[0, 0, 0, 0] = 16  # MSE = 256 / 48
    assert psnr_uint8(a, b) == pytest.approx(10 * math.log10(255**2 * 48 / 256))


def test_pixel_fraction_counts_pixels_not_channels_and_is_strict():
    a = np.full((2, 10, 10, 3), 100, np.uint8)
    b = a.copy()
    b[0, 0, 0, :] = 110  # one pixel, all three channels off
    b[1, 5, 5, 1] = 103  # one pixel, one channel off by 3
    b[1, 6, 6, 2] = 102  # exactly 2 levels: allowed
    assert frac_pixels_over(a, b, levels=2) == pytest.approx(2 / 200)
    assert frac_pixels_over(a, b, levels=2, channel_axis=None) == pytest.approx(4 / 600)


def test_compare_thresholds_on_uint8_images():
    rng = np.random.default_rng(0)
    ref = rng.uniform(-0.9, 0.9, (4, *IMAGE.dims)).astype(np.float32)
    th = Thresholds()
    tiny = compare(IMAGE, 4, ref, ref + 1e-4, th)
    assert tiny.passed and tiny.max_diff <= 1 and tiny.psnr > 60
    # 2% of pixels off by 10 levels: PSNR stays high (~43 dB) but the pixel rule fails.
    bad = ref.copy()
    mask = rng.random((4, 1, *IMAGE.dims[1:])) < 0.02
    bad += np.where(mask, 10 / 127.5, 0).astype(np.float32)
    check = compare(IMAGE, 4, ref, bad, th)
    assert not check.passed and check.psnr > th.min_psnr_db
    assert "of pixels > 2 levels" in check.reason and check.nan_count == 0
    # Noise everywhere: PSNR fails too.
    noisy = compare(IMAGE, 4, ref, ref + rng.normal(0, 0.05, ref.shape).astype(np.float32), th)
    assert not noisy.passed and "PSNR" in noisy.reason


def test_compare_counts_nan_and_inf_and_fails():
    ref = np.zeros((2, *IMAGE.dims), np.float32)
    got = ref.copy()
    got[0, 0, 0, 0], got[1, 2, 3, 4] = np.nan, np.inf
    check = compare(IMAGE, 2, ref, got, Thresholds())
    assert check.nan_count == 2 and not check.passed and "2 NaN/Inf" in check.reason


def test_compare_rejects_a_shape_mismatch():
    ref = np.zeros((2, *IMAGE.dims), np.float32)
    check = compare(IMAGE, 2, ref, ref[:, :, :32], Thresholds())
    assert not check.passed and "shape" in check.reason


def test_non_image_outputs_are_scored_on_the_reference_range():
    logits = TensorSpec("logits", "FP32", (10,))
    ref = np.linspace(-5, 5, 40, dtype=np.float32).reshape(4, 10)
    assert compare(logits, 4, ref, ref + 1e-3, Thresholds()).passed
    assert not compare(logits, 4, ref, -ref, Thresholds()).passed


# --- inputs ---------------------------------------------------------------------------------


def test_gate_inputs_are_fresh_and_mixed_label():
    feeds = gate_inputs(NET, 12, seed=7)
    labels = feeds["class_onehot"].argmax(1)
    assert feeds["class_onehot"].sum(1).tolist() == [1.0] * 12
    assert len(set(labels.tolist())) == 10, "every class appears in a batch of 12"
    assert not np.array_equal(gate_inputs(NET, 12, seed=8)["z"], feeds["z"])
    singles = {int(gate_inputs(NET, 1, seed=s)["class_onehot"].argmax()) for s in range(30)}
    assert len(singles) > 3, "batch-1 checks must not always use class 0"


# --- the gate on real (tiny) networks ---------------------------------------------------------


def test_gate_passes_simulated_fp16_of_the_tiny_generator(tiny_generator, reference):
    report = run_gate(reference, torch_fp16_runner(tiny_generator, NET), NET, batch_sizes=BATCHES)
    assert report.passed, str(report)
    assert [c.batch for c in report.checks] == list(BATCHES)
    assert all(c.nan_count == 0 and c.psnr >= 40 for c in report.checks)
    report.assert_passed()
    assert "PASSED" in str(report)


def test_gate_default_batch_sizes_are_one_opt_and_max(tiny_generator, reference):
    report = run_gate(reference, TorchRunner(tiny_generator, NET), NET)
    assert [c.batch for c in report.checks] == [1, NET.profile.opt_batch, NET.max_batch_size]
    assert report.passed


def test_gate_rejects_a_generator_whose_normalisation_overflows_in_fp16(tiny_generator, reference):
    broken = overflowing_generator(tiny_generator)
    # In fp32 the rescaling is exact: the broken network still matches the reference...
    assert run_gate(reference, TorchRunner(broken, NET), NET, batch_sizes=BATCHES).passed
    # ...in fp16 its activations and BN variance pass 65504.
    report = run_gate(reference, torch_fp16_runner(broken, NET), NET, batch_sizes=BATCHES)
    assert not report.passed
    assert report.failed_outputs == ("image",)
    assert all(c.nan_count > 0 for c in report.checks)
    assert "FAILED: output(s) 'image'" in str(report)
    with pytest.raises(ParityGateError, match="'image'") as err:
        report.assert_passed()
    assert err.value.report is report


def test_a_candidate_missing_an_output_fails(reference):
    report = run_gate(reference, lambda feeds: {}, NET, batch_sizes=(1,))
    assert not report.passed and report.checks[0].reason == "missing from candidate"


def test_torch_runner_leaves_the_callers_model_in_fp32(tiny_generator):
    torch_fp16_runner(tiny_generator, NET)
    assert all(p.dtype == torch.float32 for p in tiny_generator.parameters())


def test_cli_writes_a_markdown_report(tmp_path: Path, torch_threads):
    out = tmp_path / "parity.md"
    argv = ["--weights", "random-tiny", "--candidate", "torch-fp16", "--batch-sizes", "1", "3"]
    assert main([*argv, "--report", str(out)]) == 0
    text = out.read_text()
    assert "python -m export.parity --weights random-tiny --candidate torch-fp16" in text
    assert "Machine:" in text and "| image | 3 |" in text and "PASSED" in text
