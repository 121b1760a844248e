"""CPU runners: a network with variable image sides runs big batches in calls bounded by pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecomgen.serving import runners
from ecomgen.serving.runners import OnnxRuntimeRunner, OpenVinoRunner, spatial_rows


class Upsample2(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 12, 3, padding=1)
        self.shuffle = torch.nn.PixelShuffle(2)

    def forward(self, lowres: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(lowres))


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("runner") / "up2.onnx"
    torch.onnx.export(
        Upsample2().eval(),
        (torch.zeros(1, 3, 8, 8),),
        str(path),
        input_names=["lowres"],
        output_names=["highres"],
        dynamic_axes={"lowres": {0: "n", 2: "h", 3: "w"}, "highres": {0: "n", 2: "h2", 3: "w2"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def test_rows_per_call_follow_the_pixel_budget():
    assert spatial_rows((16, 3, 64, 48), 512 * 512) == 85
    assert spatial_rows((16, 3, 512, 512), 512 * 512) == 1
    assert spatial_rows((2, 3, 1024, 1024), 512 * 512) == 1  # never zero


@pytest.mark.parametrize("make", [OnnxRuntimeRunner, lambda p: OpenVinoRunner(p, 1, 8, "f32")])
def test_a_big_batch_runs_in_bounded_calls_with_the_same_result(onnx_file, monkeypatch, make):
    x = np.random.default_rng(0).standard_normal((5, 3, 20, 30)).astype(np.float32)
    whole = make(onnx_file).run({"lowres": x})["highres"]
    monkeypatch.setattr(runners, "PIXELS_PER_CALL", 2 * 20 * 30)  # two rows per call
    runner = make(onnx_file)
    calls: list[int] = []
    if isinstance(runner, OnnxRuntimeRunner):
        inner = runner._call
        monkeypatch.setattr(runner, "_call", lambda f: calls.append(len(f["lowres"])) or inner(f))
    out = runner.run({"lowres": x})["highres"]
    assert out.shape == (5, 3, 40, 60)
    np.testing.assert_allclose(out, whole, atol=1e-5)
    if isinstance(runner, OpenVinoRunner):
        calls = [shapes[0][0] for shapes in runner.compiled]  # compiled call shapes: 2 and 1 rows
        assert sorted(calls) == [1, 2]
    else:
        assert calls == [2, 2, 1]


def test_compiled_shapes_are_evicted_by_pixels(onnx_file, monkeypatch):
    monkeypatch.setattr(runners, "PIXELS_CACHED", 3 * 32 * 32)
    runner = OpenVinoRunner(onnx_file, 1, 8, "f32")
    for side in (16, 24, 32, 40):
        runner.run({"lowres": np.zeros((1, 3, side, side), np.float32)})
    cached = sum(s[0][0] * s[0][2] * s[0][3] for s in runner.compiled)
    assert cached <= 3 * 32 * 32 and len(runner.compiled) == 2  # 40x40 and 32x32 fit; older went
    assert (1, 3, 40, 40) in {s[0] for s in runner.compiled}  # the newest is always kept


@pytest.fixture(scope="module")
def batch_only_onnx(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("runner") / "linear.onnx"
    torch.onnx.export(
        torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh()).eval(),
        (torch.zeros(1, 6),),
        str(path),
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    return path


def test_a_calibrated_chunk_caps_each_call_with_the_same_result(batch_only_onnx, tmp_path):
    """A host whose calibration found a batch of 4 fastest runs a batch of 13 as 4 + 4 + 4 + 1."""
    import json

    x = np.random.default_rng(1).standard_normal((13, 6)).astype(np.float32)
    whole = runners.make_runner(batch_only_onnx, "openvino-f32", 1, 16).run({"x": x})["y"]
    capped = runners.make_runner(batch_only_onnx, "openvino-f32", 1, 16, max_chunk=4)
    assert isinstance(capped, OpenVinoRunner) and capped.chunks(13) == [4, 4, 4, 1]
    np.testing.assert_allclose(capped.run({"x": x})["y"], whole, atol=1e-6)
    onnx = tmp_path / "net.onnx"
    onnx.write_bytes(batch_only_onnx.read_bytes())
    assert runners.calibrated_chunk(onnx) == 0
    onnx.with_name(f"net.{runners.CHOICE_FILE}").write_text(
        json.dumps({"runtime": "openvino-f32", "max_chunk": 4})
    )
    assert runners.calibrated_chunk(onnx) == 4
