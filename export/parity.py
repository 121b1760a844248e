"""FP16 parity gate: does a reduced-precision runtime serve the same images as FP32?

A *runner* is any callable mapping a feed dict of numpy arrays (named like the
spec's inputs) to a dict of numpy outputs (named like the spec's outputs). The
gate feeds fresh random latents with mixed labels at batch sizes 1, the
profile's opt and max, quantises every output to uint8 exactly as a client sees
it (``ecomgen.numerics.quantise``: images over [-1, 1], masks over [0, 1], anything
else over the reference's range), and passes only if, for every output and batch size:

* PSNR >= 40 dB against the FP32 reference (``ecomgen.numerics.outputs_match``),
* at most 1% of pixels differ by more than 2 uint8 levels (a pixel counts once
  however many of its channels differ),
* the candidate produced no NaN/Inf.

Uint8 is the unit because that is what a client receives: a float difference
below half a level is invisible, and one above it is a different image.

Runners provided here: ONNX Runtime FP32 (the reference), PyTorch FP32, PyTorch
``.half()`` on CPU (simulated FP16: torch 2.13 runs Linear, ConvTranspose2d,
BatchNorm and Tanh in half precision on CPU, and fp16 overflows at 65504 just
as on the GPU), and TensorRT (GPU only; needs ``tensorrt`` and ``cuda-python``).

    python -m export.parity --model product_gan --candidate torch-fp16 \\
        --report benchmarks/results/fp16-parity-cpu-simulated.md
    python -m export.parity --model product_gan --candidate tensorrt \\
        --engine build/tensorrt/product_gan_generator.plan      # on a GPU host
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import math
import platform
import shlex
import sys
import tempfile
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecomgen.hostinfo import machine_description
from ecomgen.numerics import PARITY_MIN_PSNR_DB, output_levels, outputs_match
from ecomgen.registry import REGISTRY
from ecomgen.serving.runners import OnnxRuntimeRunner as _OrtRunner
from ecomgen.spec import NetworkSpec
from ecomgen_client.contracts import TensorSpec
from export.onnx import (
    export_network,
    load_modules,
    onnx_path,
    sample_inputs,
    strip_spectral_norm,
    tiny_modules,
)
from training.paths import CHECKPOINT_DIR, REPO_ROOT

log = logging.getLogger("export.parity")

Feeds = dict[str, np.ndarray]
Outputs = Mapping[str, np.ndarray]
Runner = Callable[[Feeds], Outputs]

CANDIDATES = ("torch-fp16", "torch-fp32", "onnxruntime-fp32", "tensorrt")
# Far from the seeds export.onnx.check_parity uses, so the gate sees inputs no earlier check saw.
DEFAULT_SEED = 20_000


@dataclass(frozen=True)
class Thresholds:
    min_psnr_db: float = PARITY_MIN_PSNR_DB
    max_level_diff: int = 2  # uint8 levels
    max_frac_pixels: float = 0.01  # fraction of pixels allowed above max_level_diff

    def __str__(self) -> str:
        return (
            f"PSNR >= {self.min_psnr_db:g} dB, <= {self.max_frac_pixels:.0%} of pixels differ by "
            f"> {self.max_level_diff} levels, no NaN/Inf"
        )


@dataclass(frozen=True)
class OutputCheck:
    """One output at one batch size."""

    output: str
    batch: int
    psnr: float  # dB over uint8 values; inf when identical
    frac_pixels_gt2: float  # fraction of pixels differing by more than Thresholds.max_level_diff
    max_diff: int  # uint8 levels
    nan_count: int  # non-finite values in the candidate's float output
    passed: bool
    reason: str = ""


@dataclass(frozen=True)
class GateReport:
    network: str
    reference: str
    candidate: str
    thresholds: Thresholds
    checks: tuple[OutputCheck, ...]
    seed: int = DEFAULT_SEED

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed_outputs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(c.output for c in self.checks if not c.passed))

    def table(self) -> str:
        """Markdown table, one row per output and batch size."""
        over = f"pixels > {self.thresholds.max_level_diff} levels"
        rows = [
            f"| output | batch | PSNR (dB) | {over} | max diff (levels) | NaN/Inf | result |",
            "|---|---:|---:|---:|---:|---:|---|",
        ]
        for c in self.checks:
            verdict = "pass" if c.passed else f"**FAIL**: {c.reason}"
            rows.append(
                f"| {c.output} | {c.batch} | {_fmt_db(c.psnr)} | {c.frac_pixels_gt2:.4%} | {c.max_diff} "
                f"| {c.nan_count} | {verdict} |"
            )
        return "\n".join(rows)

    def verdict(self) -> str:
        if self.passed:
            return f"PASSED: {self.candidate} matches {self.reference} on every output"
        names = ", ".join(map(repr, self.failed_outputs))
        return f"FAILED: output(s) {names} of {self.network} ({self.candidate})"

    def __str__(self) -> str:
        return (
            f"parity gate {self.network}: {self.candidate} vs {self.reference} ({self.thresholds})\n"
            f"{self.table()}\n{self.verdict()}"
        )

    def assert_passed(self) -> None:
        if not self.passed:
            raise ParityGateError(self)


class ParityGateError(AssertionError):
    """The candidate runtime does not reproduce the reference images closely enough."""

    def __init__(self, report: GateReport):
        super().__init__(str(report))
        self.report = report


def _fmt_db(psnr: float) -> str:
    return "inf" if math.isinf(psnr) else ("nan" if math.isnan(psnr) else f"{psnr:.2f}")


# --- metrics on uint8 images (pure numpy) -----------------------------------------


def frac_pixels_over(
    ref: np.ndarray, got: np.ndarray, levels: int = 2, channel_axis: int | None = -1
) -> float:
    """Fraction of pixels where any channel differs by more than ``levels``."""
    over = np.abs(ref.astype(np.int16) - got.astype(np.int16)) > levels
    if channel_axis is not None:
        over = over.any(axis=channel_axis)
    return float(over.mean()) if over.size else 0.0


def compare(t: TensorSpec, batch: int, ref: np.ndarray, got: np.ndarray, th: Thresholds) -> OutputCheck:
    """Score one output against the reference."""
    if got.shape != ref.shape:
        reason = f"shape {tuple(got.shape)} != reference {tuple(ref.shape)}"
        return OutputCheck(t.name, batch, math.nan, 1.0, 255, 0, False, reason)
    ref_bad = int(np.count_nonzero(~np.isfinite(ref)))
    nan_count = int(np.count_nonzero(~np.isfinite(got)))
    # Non-finite values are counted above; the quantiser maps them to the range's ends.
    _, psnr = outputs_match(ref, got, t.kind)
    r8, g8 = output_levels(t.kind, ref, got)
    channel_axis = 1 if t.kind == "image" else None  # NCHW: a pixel counts once whatever its channels
    frac = frac_pixels_over(r8, g8, th.max_level_diff, channel_axis)
    max_diff = int(np.abs(r8.astype(np.int16) - g8.astype(np.int16)).max()) if r8.size else 0
    reasons = []
    if ref_bad:
        reasons.append(f"reference has {ref_bad} NaN/Inf")
    if nan_count:
        reasons.append(f"{nan_count} NaN/Inf")
    if psnr < th.min_psnr_db:
        reasons.append(f"PSNR {psnr:.2f} < {th.min_psnr_db:g} dB")
    if frac > th.max_frac_pixels:
        reasons.append(f"{frac:.2%} of pixels > {th.max_level_diff} levels")
    return OutputCheck(t.name, batch, psnr, frac, max_diff, nan_count, not reasons, "; ".join(reasons))


# --- the gate ---------------------------------------------------------------------


def gate_inputs(net: NetworkSpec, batch: int, seed: int) -> dict[str, np.ndarray]:
    """``sample_inputs`` with a fresh seed, and labels rotated and shuffled by that seed.

    sample_inputs gives row i class i % C; rotating by a random offset means batch 1
    is not always class 0, and shuffling rows keeps every batch mixed-label.
    """
    feeds = sample_inputs(net, batch, seed=seed)
    rng = np.random.default_rng(seed)
    for name, arr in feeds.items():
        if any(t.name == name and t.kind == "onehot" for t in net.inputs):
            rolled = np.roll(arr, int(rng.integers(arr.shape[1])), axis=1)
            feeds[name] = np.ascontiguousarray(rolled[rng.permutation(batch)])
    return feeds


def default_batch_sizes(net: NetworkSpec) -> tuple[int, ...]:
    return tuple(sorted({1, net.profile.opt_batch, net.profile.max_batch}))


def run_gate(
    reference: Runner,
    candidate: Runner,
    net: NetworkSpec,
    *,
    batch_sizes: Sequence[int] | None = None,
    seed: int = DEFAULT_SEED,
    thresholds: Thresholds = Thresholds(),
) -> GateReport:
    """Compare ``candidate`` with ``reference`` on fresh mixed-label batches; never raises on a mismatch."""
    checks: list[OutputCheck] = []
    for i, b in enumerate(batch_sizes or default_batch_sizes(net)):
        feeds = gate_inputs(net, b, seed + i)
        ref_out, got_out = reference(feeds), candidate(feeds)
        for t in net.outputs:
            if t.name not in ref_out:
                raise KeyError(f"reference runner returned no output {t.name!r} (got {sorted(ref_out)})")
            if t.name not in got_out:
                checks.append(OutputCheck(t.name, b, math.nan, 1.0, 255, 0, False, "missing from candidate"))
                continue
            checks.append(compare(t, b, np.asarray(ref_out[t.name]), np.asarray(got_out[t.name]), thresholds))
    report = GateReport(
        net.name, _runner_name(reference), _runner_name(candidate), thresholds, tuple(checks), seed
    )
    log.info("%s", report.verdict())
    return report


def _runner_name(runner: Runner) -> str:
    return str(getattr(runner, "name", None) or getattr(runner, "__name__", type(runner).__name__))


# --- runners ------------------------------------------------------------------------


class OnnxRuntimeRunner(_OrtRunner):
    """FP32 reference: the same ONNX file the CPU target serves and TensorRT is built from."""

    def __init__(self, path: Path, threads: int = 1, name: str = "onnxruntime-fp32"):
        super().__init__(path, threads)
        self.name = name


class TorchRunner:
    """PyTorch on CPU in ``dtype``; float16 simulates an FP16 engine's storage precision.

    Only the storage format is simulated: oneDNN accumulates in fp32 like TensorRT's
    fp16 kernels, but TensorRT also fuses layers (fewer roundings) and may keep some in
    fp32, so a pass here is necessary, not sufficient, for a pass on the GPU.
    """

    def __init__(
        self, model: nn.Module, net: NetworkSpec, dtype: torch.dtype = torch.float32, name: str = ""
    ):
        # A private copy: .to(dtype) and spectral-norm folding must not touch the caller's model.
        self.model = strip_spectral_norm(copy.deepcopy(model)).eval().to(dtype)
        self.net, self.dtype = net, dtype
        self.name = name or f"torch-{str(dtype).removeprefix('torch.')}-cpu"

    @torch.no_grad()
    def __call__(self, feeds: Feeds) -> dict[str, np.ndarray]:
        args = [torch.from_numpy(np.ascontiguousarray(feeds[t.name])).to(self.dtype) for t in self.net.inputs]
        out = self.model(*args)
        outs = (out,) if isinstance(out, torch.Tensor) else tuple(out)
        return {t.name: o.float().numpy() for t, o in zip(self.net.outputs, outs, strict=True)}


def torch_fp16_runner(model: nn.Module, net: NetworkSpec) -> TorchRunner:
    """Simulated FP16 on CPU (``model.half()``); fp16 overflows at 65504 as on the GPU."""
    return TorchRunner(model, net, torch.float16, name="torch-fp16-cpu (simulated FP16)")


# --- helpers for the CLI and the report -----------------------------------------------


@dataclass
class ReportContext:
    command: str
    weights: str
    onnx: str
    threads: int
    notes: list[str] = field(default_factory=list)


def markdown_report(report: GateReport, ctx: ReportContext) -> str:
    import onnxruntime as ort

    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"# FP16 parity gate: {report.network}, {report.candidate} vs {report.reference}",
        "",
        f"**Result: {report.verdict()}**",
        "",
        "Reproduce:",
        "",
        "```sh",
        ctx.command,
        "```",
        "",
        f"- Date: {now}",
        f"- Machine: {machine_description()} (no GPU; torch threads = {ctx.threads})",
        f"- Software: Python {platform.python_version()}, torch {torch.__version__}, "
        f"onnxruntime {ort.__version__}, numpy {np.__version__}",
        f"- Weights: {ctx.weights}",
        f"- Reference: {report.reference} on {ctx.onnx}",
        f"- Candidate: {report.candidate}",
        f"- Inputs: `export.onnx.sample_inputs` with seeds {report.seed}+i, labels rotated and shuffled "
        "per batch (every batch mixed-label)",
        f"- Thresholds: {report.thresholds}, on uint8 levels from `ecomgen.numerics.quantise`",
        "",
        report.table(),
        "",
    ]
    for note in ctx.notes:
        lines += [note, ""]
    return "\n".join(lines).rstrip() + "\n"


def _load_model(network: str, weights: str, checkpoint_dir: Path) -> tuple[nn.Module, str]:
    model, _ = REGISTRY.networks()[network]
    if weights == "random-tiny":
        return tiny_modules(model)[network], "tiny random weights (seed 0), NOT the trained model"
    try:
        module = load_modules(model, checkpoint_dir)[network]
    except FileNotFoundError as e:
        raise SystemExit(f"{e}: train first, pass --checkpoint-dir, or use --weights random-tiny") from None
    return module, f"trained checkpoints in `{_shown(checkpoint_dir)}` ({model.name})"


def _shown(path: Path) -> str:
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT) if path.is_relative_to(REPO_ROOT) else path)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--network", choices=sorted(REGISTRY.networks()), default="product_gan_generator")
    p.add_argument("--candidate", choices=CANDIDATES, default="torch-fp16")
    p.add_argument("--engine", type=Path, help="TensorRT plan (for --candidate tensorrt)")
    p.add_argument(
        "--onnx",
        type=Path,
        help="reference ONNX file (default: build/onnx/<network>.onnx for tensorrt, "
        "else a fresh export of the loaded weights)",
    )
    p.add_argument("--weights", choices=["trained", "random-tiny"], default="trained")
    p.add_argument("--checkpoint-dir", type=Path, default=CHECKPOINT_DIR)
    p.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 1, opt and max")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--threads", type=int, default=1, help="CPU threads for torch and ONNX Runtime")
    p.add_argument("--report", type=Path, default=None, help="write a markdown report here")
    return p


def _reference_onnx(
    opt: argparse.Namespace, net: NetworkSpec, model: nn.Module | None, tmp: Path
) -> tuple[Path, str]:
    """The reference ONNX file and how the report describes it. The engine is judged against the
    ONNX file it was built from; torch candidates against an export of their own weights, so
    reference and candidate cannot drift apart."""
    if opt.onnx is not None:
        onnx_file, onnx_desc = opt.onnx, f"`{_shown(opt.onnx)}`"
    elif model is not None:
        onnx_file, onnx_desc = tmp / "reference.onnx", "a fresh export of the same weights"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            export_network(model, net, onnx_file)
    else:
        onnx_file = onnx_path(net)
        onnx_desc = f"`{_shown(onnx_file)}`"
    if not onnx_file.exists():
        raise SystemExit(f"{onnx_file} not found: run `python -m export.onnx` first")
    return onnx_file, onnx_desc


def _candidate(opt: argparse.Namespace, net: NetworkSpec, model: nn.Module | None, onnx_file: Path) -> Runner:
    if opt.candidate == "tensorrt":
        from export.trt_runtime import TensorRTRunner

        return TensorRTRunner(opt.engine, net)
    if opt.candidate == "onnxruntime-fp32":
        return OnnxRuntimeRunner(onnx_file, threads=opt.threads, name="onnxruntime-fp32 (self-check)")
    assert model is not None
    if opt.candidate == "torch-fp32":
        return TorchRunner(model, net)
    return torch_fp16_runner(model, net)


def _notes(opt: argparse.Namespace) -> list[str]:
    """What the report must say about this kind of run."""
    notes = []
    if opt.weights == "random-tiny" and opt.candidate != "tensorrt":
        notes.append(
            "These are random weights: the tiny generator's images vary little from input to input, "
            "so this run shows the gate and its command working, not that the trained model fits "
            "fp16. Once `checkpoints/product_gan.safetensors` exists, rerun without "
            "`--weights random-tiny`."
        )
    if opt.candidate == "torch-fp16":
        notes.append(
            "Simulated FP16: weights and activations are stored as float16 by PyTorch on CPU. This "
            "checks that the network's values fit fp16 (max 65504) and that rounding stays under the "
            "thresholds; it does not exercise TensorRT's kernels, tactic choice or layer fusion. Run "
            "the same gate with `--candidate tensorrt --engine ...` on the GPU host (the builder "
            "`python -m export.tensorrt` does so before it writes `model.plan`)."
        )
    return notes


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    opt = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    torch.set_num_threads(opt.threads)
    net = REGISTRY.networks()[opt.network][1]
    if opt.candidate == "tensorrt" and opt.engine is None:
        p.error("--candidate tensorrt needs --engine PLAN")

    with tempfile.TemporaryDirectory() as tmp:
        model: nn.Module | None = None
        weights_desc = "those of the reference ONNX file"
        if opt.candidate != "tensorrt":
            model, weights_desc = _load_model(net.name, opt.weights, opt.checkpoint_dir)
        onnx_file, onnx_desc = _reference_onnx(opt, net, model, Path(tmp))
        reference = OnnxRuntimeRunner(onnx_file, threads=opt.threads)
        candidate = _candidate(opt, net, model, onnx_file)
        report = run_gate(reference, candidate, net, batch_sizes=opt.batch_sizes, seed=opt.seed)

    print(report)
    if opt.report:
        ctx = ReportContext(
            command="python -m export.parity " + shlex.join(sys.argv[1:] if argv is None else argv),
            weights=weights_desc,
            onnx=onnx_desc,
            threads=opt.threads,
            notes=_notes(opt),
        )
        opt.report.parent.mkdir(parents=True, exist_ok=True)
        opt.report.write_text(markdown_report(report, ctx))
        print(f"wrote {opt.report}")
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
