"""Export every network of a served model to ONNX and check it against PyTorch.

Generic over the registry: a served model's ``module`` provides its trained networks
(``load_networks``) keyed by step name, and the network specs give tensor names,
dynamic axes and the opset. BatchNorm runs in eval mode (a request's output never
depends on its batch neighbours) and spectral norm is folded into plain weights. The
parity check feeds batches with a different class in every row, because batched class
conditioning is where exporters and TensorRT went wrong before (TensorRT#3004).

ONNX files are written once to ``build/onnx/<network>.onnx`` (the TensorRT builder's
input) and placed in the version directory of every cpu model that runs them.

    python -m export.onnx --model product_gan
    python -m export.onnx --model all
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import shutil
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import torch
from torch import nn

from ecomgen.numerics import to_uint8_hwc
from ecomgen.registry import REGISTRY
from ecomgen.serving.runners import OnnxRuntimeRunner
from ecomgen.spec import NetworkSpec, ServedModel
from export.repository import DEFAULT_ROOT, repository_models
from training.paths import BUILD_DIR, CHECKPOINT_DIR

log = logging.getLogger("export.onnx")
ONNX_DIR = BUILD_DIR / "onnx"


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


def sample_inputs(net: NetworkSpec, batch: int, seed: int = 0, size: str = "opt") -> dict[str, np.ndarray]:
    """Random inputs matching the network spec (see ``NetworkSpec.sample_inputs``)."""
    return net.sample_inputs(batch, seed, size)


def export_network(module: nn.Module, net: NetworkSpec, path: Path) -> Path:
    """Write ``module`` as ONNX with the spec's tensor names; the batch and every -1 dim are dynamic."""
    module = strip_spectral_norm(module).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    example = tuple(torch.from_numpy(a) for a in sample_inputs(net, 2).values())
    dynamic: dict[str, dict[int, str]] = {}
    for t in (*net.inputs, *net.outputs):
        axes = {0: "batch"}
        axes.update({i + 1: f"{t.name}_d{i}" for i, d in enumerate(t.dims) if d < 0})
        dynamic[t.name] = axes
    tmp = path.with_suffix(".onnx.tmp")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            example,
            str(tmp),
            input_names=[t.name for t in net.inputs],
            output_names=[t.name for t in net.outputs],
            dynamic_axes=dynamic,
            opset_version=net.onnx_opset,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(onnx.load(str(tmp)))
    os.replace(tmp, path)  # readers never see a half-written file
    log.info("wrote %s", path)
    return path


def _outputs(module: nn.Module, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    with torch.no_grad():
        ref = module(*(torch.from_numpy(a) for a in feeds.values()))
    return [ref.numpy()] if isinstance(ref, torch.Tensor) else [r.numpy() for r in ref]


def check_parity(
    module: nn.Module,
    net: NetworkSpec,
    path: Path,
    batch_sizes: tuple[int, ...] | None = None,
    atol: float = 1e-3,
) -> ParityReport:
    """Compare ONNX Runtime with PyTorch on mixed-label batches; raise ParityError above ``atol``."""
    module = module.eval()
    atol = max(atol, net.parity_atol)
    if batch_sizes is None:
        batch_sizes = tuple(sorted({1, net.profile.opt_batch, net.max_batch_size}))
    runner = OnnxRuntimeRunner(path, threads=1)
    worst, worst_u8 = 0.0, 0
    sizes = ("min", "opt") if any(t.variable for t in net.inputs) else ("opt",)
    for i, b in enumerate(batch_sizes):
        for size in sizes:
            feeds = sample_inputs(net, b, seed=100 + i, size=size)
            got = runner.run(feeds)
            for t, r in zip(net.outputs, _outputs(module, feeds), strict=True):
                g = got[t.name]
                if g.shape != r.shape:
                    raise ParityError(
                        f"{net.name}.{t.name}: ONNX shape {g.shape} != PyTorch {r.shape} at batch {b}"
                    )
                if not np.isfinite(g).all():
                    raise ParityError(f"{net.name}.{t.name}: ONNX output has NaN/Inf at batch {b}")
                diff = float(np.abs(g - r).max())
                worst = max(worst, diff)
                if t.kind == "image":
                    u8 = np.abs(to_uint8_hwc(g).astype(int) - to_uint8_hwc(r).astype(int)).max()
                    worst_u8 = max(worst_u8, int(u8))
                if diff > atol:
                    raise ParityError(
                        f"{net.name}.{t.name}: ONNX vs PyTorch max |diff| {diff:.3e} > {atol:.1e} "
                        f"at batch {b}"
                    )
    report = ParityReport(tuple(batch_sizes), worst, worst_u8)
    log.info("%s: %s", net.name, report)
    return report


def _networks(model: ServedModel, load: str, *args: object) -> dict[str, nn.Module]:
    found: dict[str, nn.Module] = {}
    for name in model.modules if model.networks else ():
        found.update(getattr(importlib.import_module(name), load)(*args))
    missing = [n.name for n in model.networks if n.name not in found]
    if missing:
        raise KeyError(f"{model.name}: {model.modules} provide no network {missing}")
    return {n.name: found[n.name] for n in model.networks}


def load_modules(model: ServedModel, checkpoint_dir: Path = CHECKPOINT_DIR) -> dict[str, nn.Module]:
    """The trained networks behind a served model, by step name (its spec's ``module``)."""
    return _networks(model, "load_networks", checkpoint_dir)


def tiny_modules(model: ServedModel, seed: int = 0) -> dict[str, nn.Module]:
    """Tiny random-weight networks with the same structure (for fast tests)."""
    return _networks(model, "tiny_networks", seed)


def onnx_path(network: str | NetworkSpec, onnx_dir: Path = ONNX_DIR) -> Path:
    """The canonical ONNX file of a network (the TensorRT builder's input)."""
    name = network if isinstance(network, str) else network.name
    return onnx_dir / f"{name}.onnx"


def is_stale(model: ServedModel, onnx_dir: Path = ONNX_DIR, checkpoint_dir: Path = CHECKPOINT_DIR) -> bool:
    outs = [onnx_path(n, onnx_dir) for n in model.networks]
    if not all(o.exists() for o in outs):
        return True
    sources = [checkpoint_dir / c for c in model.checkpoints if (checkpoint_dir / c).exists()]
    newest = max((p.stat().st_mtime for p in sources), default=0.0)
    return any(o.stat().st_mtime < newest for o in outs)


def export_model(
    model: ServedModel,
    onnx_dir: Path = ONNX_DIR,
    modules: Mapping[str, nn.Module] | None = None,
    atol: float = 1e-3,
) -> dict[str, ParityReport]:
    """Export and parity-check every network of ``model`` into ``onnx_dir``."""
    modules = modules if modules is not None else load_modules(model)
    reports = {}
    for net in model.networks:
        out = export_network(modules[net.name], net, onnx_path(net, onnx_dir))
        reports[net.name] = check_parity(modules[net.name], net, out, atol=atol)
    return reports


def install_onnx(
    repository: Path = DEFAULT_ROOT,
    onnx_dir: Path = ONNX_DIR,
    models: Iterable[ServedModel] = REGISTRY,
    checkpoint_dir: Path = CHECKPOINT_DIR,
) -> list[Path]:
    """Place each network's ONNX file in the version directory of every cpu model that runs it,
    and the checkpoint files its Python steps read (``PythonStep.artifacts``, e.g. the
    personalisation catalogue) beside them; an artifact that does not exist (tiny weights) is
    skipped, and the step says so when it loads."""
    placed = []
    for repo_model in repository_models("cpu", models):
        version = repository / "cpu" / repo_model.name / "1"
        for net in repo_model.networks:
            src = onnx_path(net, onnx_dir)
            if not src.exists():
                raise FileNotFoundError(f"{src} missing: export {repo_model.name}'s networks first")
            if _place(src, version / f"{net}.onnx"):
                placed.append(version / f"{net}.onnx")
        for name in repo_model.artifacts:
            src = checkpoint_dir / name
            if src.exists() and _place(src, version / name):
                placed.append(version / name)
    return placed


def _place(src: Path, dest: Path) -> bool:
    """Hard-link (else copy) ``src`` to ``dest`` unless an up-to-date copy is there; atomic."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if (
        dest.exists()
        and dest.stat().st_mtime >= src.stat().st_mtime
        and dest.stat().st_size == src.stat().st_size
    ):
        return False
    tmp = dest.with_name(dest.name + ".tmp")
    try:
        if tmp.exists():
            tmp.unlink()
        os.link(src, tmp)  # no copy where the file system allows it
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dest)
    return True


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=["all", *REGISTRY.names()], default="all")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
    p.add_argument("--onnx-dir", type=Path, default=ONNX_DIR)
    p.add_argument("--repository", type=Path, default=DEFAULT_ROOT)
    p.add_argument("--atol", type=float, default=1e-3)
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    models = list(REGISTRY) if opt.model == "all" else [REGISTRY[opt.model]]
    for model in models:
        modules = load_modules(model, opt.checkpoint_dir)
        for name, report in export_model(model, opt.onnx_dir, modules, opt.atol).items():
            print(f"{name}: {report}")
    install_onnx(opt.repository, opt.onnx_dir)


if __name__ == "__main__":
    main()
