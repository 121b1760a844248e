"""Export a trained network to ONNX and check it against PyTorch.

The batch axis is dynamic, BatchNorm runs in eval mode (so a request's output
never depends on its batch neighbours) and spectral norm is folded into plain
weights. The parity check feeds batches with a different class in every row,
because batched class conditioning is where exporters and TensorRT went wrong
before (TensorRT#3004).

    python -m export.onnx --model product_gan
"""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from ecomgen_client.specs import ENSEMBLES, SPECS, EnsembleSpec, ModelSpec, NetworkSpec
from export.triton_python.ecomgen_common import to_uint8_hwc

log = logging.getLogger("export.onnx")
REPO_ROOT = Path(__file__).resolve().parents[1]


class ParityError(AssertionError):
    """ONNX output differs from PyTorch by more than the tolerance."""


@dataclass(frozen=True)
class ParityReport:
    batch_sizes: tuple[int, ...]
    max_abs_diff: float
    max_uint8_diff: int

    def __str__(self) -> str:
        return (
            f"parity over batches {list(self.batch_sizes)}: max |diff| {self.max_abs_diff:.2e}, "
            f"max uint8 diff {self.max_uint8_diff}"
        )


def strip_spectral_norm(module: nn.Module) -> nn.Module:
    """Fold spectral norm into plain weights (its power iteration must not be exported)."""
    from torch.nn.utils import parametrize
    from torch.nn.utils.spectral_norm import SpectralNorm

    for m in module.modules():
        if any(isinstance(h, SpectralNorm) for h in m._forward_pre_hooks.values()):
            torch.nn.utils.remove_spectral_norm(m)
        if parametrize.is_parametrized(m):
            for name in list(m.parametrizations.keys()):  # type: ignore[union-attr,operator]
                parametrize.remove_parametrizations(m, name, leave_parametrized=True)
    return module


def sample_inputs(net: NetworkSpec, batch: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs matching the network spec; one-hot inputs get distinct classes per row."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for t in net.inputs:
        shape = t.batched_shape(batch)
        if "onehot" in t.name:
            arr = np.zeros(shape, t.numpy_dtype)
            arr[np.arange(batch), np.arange(batch) % shape[1]] = 1
            out[t.name] = arr
        else:
            out[t.name] = rng.standard_normal(shape).astype(t.numpy_dtype)
    return out


def export_network(model: nn.Module, net: NetworkSpec, path: Path) -> Path:
    """Write ``model`` as ONNX with the spec's tensor names and a dynamic batch axis."""
    model = strip_spectral_norm(model).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = tuple(torch.from_numpy(a) for a in sample_inputs(net, 2).values())
    names_in = [t.name for t in net.inputs]
    names_out = [t.name for t in net.outputs]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            model,
            example,
            str(path),
            input_names=names_in,
            output_names=names_out,
            dynamic_axes={n: {0: "batch"} for n in names_in + names_out},
            opset_version=net.onnx_opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(path)))
    log.info("wrote %s", path)
    return path


def check_parity(
    model: nn.Module,
    net: NetworkSpec,
    path: Path,
    batch_sizes: tuple[int, ...] | None = None,
    atol: float = 1e-3,
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch on mixed-label batches; raise ParityError above ``atol``."""
    model = model.eval()
    if batch_sizes is None:
        batch_sizes = tuple(sorted({1, net.profile.opt_batch, net.max_batch_size}))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst, worst_u8 = 0.0, 0
    for i, b in enumerate(batch_sizes):
        feeds = sample_inputs(net, b, seed=100 + i)
        with torch.no_grad():
            ref = model(*(torch.from_numpy(a) for a in feeds.values()))
        ref_np = [ref.numpy()] if isinstance(ref, torch.Tensor) else [r.numpy() for r in ref]
        got = sess.run([t.name for t in net.outputs], feeds)
        for t, r, g in zip(net.outputs, ref_np, got, strict=True):
            if g.shape != r.shape:
                raise ParityError(
                    f"{net.name}.{t.name}: ONNX shape {g.shape} != PyTorch {r.shape} at batch {b}"
                )
            if not np.isfinite(g).all():
                raise ParityError(f"{net.name}.{t.name}: ONNX output has NaN/Inf at batch {b}")
            diff = float(np.abs(g - r).max())
            worst = max(worst, diff)
            if r.ndim == 4 and r.shape[1] == 3:
                u8 = np.abs(to_uint8_hwc(g).astype(int) - to_uint8_hwc(r).astype(int)).max()
                worst_u8 = max(worst_u8, int(u8))
            if diff > atol:
                raise ParityError(
                    f"{net.name}.{t.name}: ONNX vs PyTorch max |diff| {diff:.3e} > {atol:.1e} at batch {b}"
                )
    report = ParityReport(tuple(batch_sizes), worst, worst_u8)
    log.info("%s: %s", net.name, report)
    return report


def load_trained(spec: ModelSpec, checkpoint: Path | None = None) -> nn.Module:
    """The trained PyTorch network behind a public model."""
    if spec.name == "product_gan":
        from training.product_gan import generator_from_checkpoint

        return generator_from_checkpoint(checkpoint or REPO_ROOT / spec.checkpoint)
    raise KeyError(f"no exporter for {spec.name}")


def onnx_path(spec: ModelSpec | NetworkSpec, repository: Path = REPO_ROOT / "model_repository") -> Path:
    """Where the cpu target keeps the network's ONNX file (the gpu engine is built from it)."""
    return repository / "cpu" / spec.name / "1" / "model.onnx"


def ensemble_checkpoints(spec: EnsembleSpec) -> list[Path]:
    directory = REPO_ROOT / spec.checkpoint_dir
    return [directory / f"{spec.name}.json"] + [
        directory / f"{net.name}.safetensors" for net in spec.networks
    ]


def load_ensemble_modules(spec: EnsembleSpec, checkpoint_dir: Path | None = None) -> dict[str, nn.Module]:
    """Network name -> the trained module exported for that step."""
    if spec.name == "tryon":
        from training.tryon import export_modules, pipeline_from_checkpoints

        return export_modules(pipeline_from_checkpoints(checkpoint_dir or REPO_ROOT / spec.checkpoint_dir))
    raise KeyError(f"no exporter for {spec.name}")


def export_ensemble(
    spec: EnsembleSpec,
    repository: Path = REPO_ROOT / "model_repository",
    modules: dict[str, nn.Module] | None = None,
    atol: float = 1e-3,
) -> dict[str, ParityReport]:
    """Export every network of ``spec`` into the cpu repository and check each one's parity."""
    modules = modules if modules is not None else load_ensemble_modules(spec)
    reports = {}
    for net in spec.networks:
        out = onnx_path(net, repository)
        export_network(modules[net.name], net, out)
        reports[net.name] = check_parity(modules[net.name], net, out, atol=atol)
    return reports


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=sorted([*SPECS, *ENSEMBLES]), default="product_gan")
    p.add_argument("--checkpoint", type=Path, default=None)
    p.add_argument("--repository", type=Path, default=REPO_ROOT / "model_repository")
    p.add_argument("--out", type=Path, default=None, help="ONNX path (default: inside the cpu repository)")
    p.add_argument("--atol", type=float, default=1e-3)
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    if opt.model in ENSEMBLES:
        for name, report in export_ensemble(ENSEMBLES[opt.model], opt.repository, atol=opt.atol).items():
            print(f"{name}: {report}")
        return
    spec = SPECS[opt.model]
    model = load_trained(spec, opt.checkpoint)
    out = opt.out or onnx_path(spec, opt.repository)
    export_network(model, spec.network, out)
    print(check_parity(model, spec.network, out, atol=opt.atol))


if __name__ == "__main__":
    main()
