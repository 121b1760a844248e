"""Evaluate product_gan with the product classifier (training/classifier.py).

Reports, against the held-out split of real photos:
  * conditional accuracy: the classifier's accuracy on 10,000 generated images with
    balanced labels (1,000 per class, distinct seeds), overall and per class, and its
    ratio to the classifier's accuracy on real held-out photos (target: >= 85%);
  * FCD, the Frechet distance in the classifier's 128-d feature space (FID with a
    domain classifier in place of Inception), overall and per class (intra-FCD);
  * the real-vs-real floor (train split vs held-out) and a trivial baseline
    (per-class mean image plus Gaussian noise with the class's per-pixel std).

    python -m training.metrics --generator checkpoints/product_gan.safetensors \\
        --classifier checkpoints/product_classifier.safetensors
    python -m training.metrics --skip-generator   # floor and baseline only
    python -m training.metrics --dry-run          # random weights, fake data, temp dir
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import linalg
from tqdm import tqdm

from ecomgen.hostinfo import cpu_model
from ecomgen.models.product_gan import CHECKPOINT_NAME, Generator, generate, generator_from_checkpoint
from ecomgen.numerics import to_uint8_hwc
from ecomgen_client._images import make_grid, save_png
from ecomgen_client.contracts import PRODUCT_CLASSES
from training.classifier import DEFAULT_CHECKPOINT as DEFAULT_CLASSIFIER
from training.classifier import (
    ProductClassifier,
    features_and_predictions,
    load_classifier,
)
from training.data import DEFAULT_PRODUCTS_DIR, fake_products, load_products, to_float
from training.paths import CHECKPOINT_DIR, REPO_ROOT, RESULTS_DIR

NUM_CLASSES = len(PRODUCT_CLASSES)
DEFAULT_GENERATOR = CHECKPOINT_DIR / CHECKPOINT_NAME
DEFAULT_OUT_DIR = RESULTS_DIR
TARGET_RATIO = 0.85


# --- Frechet distance ----------------------------------------------------------------


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)), computed as in
    pytorch-fid: if sqrtm of the product fails (near-singular covariances, e.g. fewer
    samples than dimensions), ``eps`` is added to both diagonals and it is retried.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shape mismatch: {mu1.shape} vs {mu2.shape}, {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2

    def imaginary(m: np.ndarray) -> bool:
        return np.iscomplexobj(m) and not np.allclose(np.diagonal(m).imag, 0, atol=1e-3)

    with warnings.catch_warnings():
        # A singular product is expected (rank-deficient covariances); failures are handled below.
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    # pytorch-fid retries only on non-finite results; a large imaginary part is the
    # same near-singular failure, so it gets the same retry.
    if not np.isfinite(covmean).all() or imaginary(covmean):
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if imaginary(covmean):
        raise ValueError(f"sqrtm has an imaginary component {np.abs(covmean.imag).max():.3g}")
    covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64) of [N, D] features."""
    f = np.asarray(feats, dtype=np.float64)
    return f.mean(axis=0), np.cov(f, rowvar=False)


def fcd(feats_a: np.ndarray, feats_b: np.ndarray) -> float:
    return frechet_distance(*feature_stats(feats_a), *feature_stats(feats_b))


# --- image sources (streamed in batches, NCHW float in [-1, 1]) ----------------------


def balanced_labels(n_per_class: int, num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.repeat(np.arange(num_classes), n_per_class)


def generated_batches(
    g: Generator, class_ids: np.ndarray, seeds: np.ndarray, batch_size: int
) -> Iterator[np.ndarray]:
    for i in range(0, len(class_ids), batch_size):
        yield generate(g, class_ids[i : i + batch_size], seeds[i : i + batch_size])


def class_mean_stats(images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Per-class mean image and per-pixel std, each [C, 3, H, W] in [-1, 1] units."""
    x = to_float(images).numpy()
    y = labels.numpy()
    means = np.stack([x[y == c].mean(axis=0) for c in range(NUM_CLASSES)])
    stds = np.stack([x[y == c].std(axis=0) for c in range(NUM_CLASSES)])
    return means, stds


def baseline_batches(
    means: np.ndarray, stds: np.ndarray, class_ids: np.ndarray, seed: int, batch_size: int
) -> Iterator[np.ndarray]:
    """Class mean image + N(0, per-pixel class std) noise, clipped to [-1, 1]."""
    rng = np.random.default_rng(seed)
    for i in range(0, len(class_ids), batch_size):
        c = class_ids[i : i + batch_size]
        noise = rng.standard_normal((len(c), *means.shape[1:]), dtype=np.float32)
        yield np.clip(means[c] + stds[c] * noise, -1.0, 1.0).astype(np.float32)


@dataclass
class Evaluated:
    """Classifier outputs for one image set."""

    feats: np.ndarray
    labels: np.ndarray
    preds: np.ndarray
    keep: list[np.ndarray] = field(default_factory=list)  # images kept for the sample grid

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean())

    def class_accuracy(self, c: int) -> float:
        m = self.labels == c
        return float((self.preds[m] == c).mean()) if m.any() else float("nan")

    def class_feats(self, c: int) -> np.ndarray:
        return self.feats[self.labels == c]


def first_per_class(labels: np.ndarray, k: int) -> np.ndarray:
    """Mask of the first ``k`` entries of each class in ``labels``."""
    mask = np.zeros(len(labels), dtype=bool)
    for c in np.unique(labels):
        mask[np.flatnonzero(labels == c)[:k]] = True
    return mask


def evaluate_stream(
    model: ProductClassifier,
    batches: Iterator[np.ndarray] | Iterator[torch.Tensor],
    labels: np.ndarray,
    batch_size: int,
    desc: str,
    keep: np.ndarray | None = None,
) -> Evaluated:
    """Features and predictions of a batched image stream whose labels are ``labels``.

    Images where the boolean mask ``keep`` is set are kept (for the sample grid).
    """
    feats, preds, kept = [], [], []
    n_batches = (len(labels) + batch_size - 1) // batch_size
    for i, x in enumerate(tqdm(batches, total=n_batches, desc=desc, dynamic_ncols=True)):
        f, p = features_and_predictions(model, x)
        feats.append(f)
        preds.append(p)
        if keep is not None:
            kept.append(x[keep[i * batch_size : i * batch_size + len(x)]])
    return Evaluated(np.concatenate(feats), labels, np.concatenate(preds), kept)


def evaluate_real(
    model: ProductClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int, desc: str
) -> Evaluated:
    batches = (images[i : i + batch_size] for i in range(0, len(images), batch_size))
    return evaluate_stream(model, batches, labels.numpy(), batch_size, desc)


def per_class_fcd(a: Evaluated, b: Evaluated) -> list[float]:
    return [fcd(a.class_feats(c), b.class_feats(c)) for c in range(NUM_CLASSES)]


# --- report ------------------------------------------------------------------------


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None or np.isnan(x) else format(x, spec)


def _pct(x: float | None) -> str:
    return "n/a" if x is None or np.isnan(x) else f"{100 * x:.1f}%"


def _meta(path: Path) -> dict:
    p = Path(path).with_suffix(".json")
    return json.loads(p.read_text()) if p.exists() else {}


@dataclass
class Inputs:
    """What is evaluated, and how the report describes it."""

    model: ProductClassifier
    generator: Generator | None
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_real: torch.Tensor
    y_real: torch.Tensor
    gen_desc: str
    clf_desc: str
    clf_command: str | None
    data_desc: str


@dataclass
class Results:
    """Every measured number the report shows."""

    real: Evaluated
    train: Evaluated
    base: Evaluated
    floor: float
    split_half: float
    base_fcd: float
    intra: dict[str, list[float]]
    seeds: np.ndarray
    gen: Evaluated | None = None
    gen_fcd: float | None = None
    png_name: str | None = None


def _summary_lines(r: Results, n_per_class: int) -> list[str]:
    real_acc = r.real.accuracy
    gen_acc = r.gen.accuracy if r.gen is not None else None
    ratio = gen_acc / real_acc if gen_acc is not None and real_acc > 0 else None
    verdict = "n/a" if ratio is None else ("PASS" if ratio >= TARGET_RATIO else "FAIL")
    n_gen, n_real = n_per_class * NUM_CLASSES, len(r.real.labels)
    lines = []
    if r.gen is None:
        lines += ["**Generator not evaluated (`--skip-generator`): floor and baseline only.**", ""]
    return [
        *lines,
        "## Summary",
        "",
        "| metric | value | notes |",
        "|---|---|---|",
        f"| classifier accuracy, real held-out | {_pct(real_acc)} | {n_real:,} photos |",
        f"| (a) conditional accuracy, generated | {_pct(gen_acc)} | classifier agrees with the requested "
        "class |",
        f"| (a) / real accuracy | {_pct(ratio)} | target >= {TARGET_RATIO:.0%}: **{verdict}** |",
        f"| (b) FCD generated vs held-out | {_fmt(r.gen_fcd)} | {n_gen:,} generated |",
        f"| (c) FCD floor: real train vs held-out | {_fmt(r.floor)} | {len(r.train.labels):,} train photos "
        "(seen by the classifier in training) |",
        f"| FCD floor: held-out half vs half | {_fmt(r.split_half)} | 2 x {n_real // 2} photos; "
        "small-sample bias only |",
        f"| (d) FCD baseline: class mean + noise | {_fmt(r.base_fcd)} | {n_gen:,} samples, sigma = per-pixel "
        "std of the class (train split), clipped to [-1, 1] |",
        f"| conditional accuracy, baseline | {_pct(r.base.accuracy)} | for scale |",
        "",
        "FCD, like FID, is biased upwards at small sample sizes, so only compare values measured "
        f"against the same held-out set (the half-vs-half floor uses {n_real // 2} photos a "
        "side, hence its larger bias). The train photos were seen by the classifier in training, which "
        "can shift their features.",
        "",
    ]


def _per_class_lines(r: Results) -> list[str]:
    lines = [
        "## Per class",
        "",
        "| class | real held-out acc | generated acc | baseline acc | intra-FCD generated "
        "| intra-FCD floor (train vs held-out) | intra-FCD baseline |",
        "|---|---|---|---|---|---|---|",
    ]
    for c, name in enumerate(PRODUCT_CLASSES):
        g_acc = r.gen.class_accuracy(c) if r.gen is not None else None
        g_fcd = r.intra["generated"][c] if r.gen is not None else None
        lines.append(
            f"| {name} | {_pct(r.real.class_accuracy(c))} | {_pct(g_acc)} | {_pct(r.base.class_accuracy(c))} "
            f"| {_fmt(g_fcd)} | {_fmt(r.intra['floor'][c])} | {_fmt(r.intra['baseline'][c])} |"
        )
    counts = ", ".join(str(int((r.real.labels == c).sum())) for c in range(NUM_CLASSES))
    lines += [
        "",
        f"Intra-FCD compares one class's images with that class's held-out photos ({counts} per class), "
        "fewer than the 128 feature dimensions, so the per-class covariances are singular (the eps "
        "offset applies) and the values are biased upwards; use them to rank classes, not as absolutes.",
        "",
    ]
    if r.png_name:
        lines += [
            "## Samples",
            "",
            "One row per class (top to bottom: " + ", ".join(PRODUCT_CLASSES) + "); the first seeds of "
            "each class in the evaluated set.",
            "",
            f"![product_gan samples]({r.png_name})",
            "",
        ]
    return lines


def write_report(
    path: Path, command: str, inputs: Inputs, r: Results, n_per_class: int, timings: dict[str, float]
) -> None:
    n_gen = n_per_class * NUM_CLASSES
    seeds_desc = f"seeds {r.seeds[0]}..{r.seeds[-1]} (one per image), labels in class order"
    lines = [
        "# product_gan evaluation",
        "",
        f"Generated {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}.",
        "",
        f"- Generator: {inputs.gen_desc}",
        f"- Classifier: {inputs.clf_desc}",
        f"- Data: {inputs.data_desc}",
        f"- Generated set: {n_gen:,} images, {n_per_class:,} per class, {seeds_desc}",
        "- FCD: Frechet distance between Gaussians fitted to the classifier's 128-d penultimate "
        "features (lower is better); every FCD below is measured against the held-out real photos "
        f"({len(r.real.labels):,} images).",
        "",
    ]
    lines += _summary_lines(r, n_per_class) + _per_class_lines(r)
    lines += ["## Commands", "", "```"]
    if inputs.clf_command:
        lines.append(inputs.clf_command)
    lines += [command, "```", "", "## Machine", ""]
    lines += [
        f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores); {platform.platform()}",
        f"- Python {platform.python_version()}, torch {torch.__version__}, {torch.get_num_threads()} "
        "torch thread(s)",
        "- Time (wall clock unless marked CPU): " + ", ".join(f"{k} {v:.0f} s" for k, v in timings.items()),
        "",
    ]
    # Repo-relative paths: the report is committed and read on other machines.
    text = "\n".join(lines).replace(f"{REPO_ROOT.parent}/shared/", "../shared/").replace(f"{REPO_ROOT}/", "")
    path.write_text(text)


# --- parse -> load -> measure -> report ------------------------------------------


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    p.add_argument("--classifier", type=Path, default=DEFAULT_CLASSIFIER)
    p.add_argument("--data-dir", type=Path, default=DEFAULT_PRODUCTS_DIR)
    p.add_argument("--n-per-class", type=int, default=1000, help="generated (and baseline) images per class")
    p.add_argument("--seed-offset", type=int, default=0, help="generated seeds are offset + 0..N-1")
    p.add_argument("--baseline-seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--grid-cols", type=int, default=10, help="samples per class row in the PNG")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.add_argument("--out-dir", type=Path, default=None, help="default: training/results")
    p.add_argument("--skip-generator", action="store_true", help="floor and baseline only")
    p.add_argument("--dry-run", action="store_true", help="random weights, fake data, tiny N; temp out dir")
    opt = p.parse_args(argv)
    if opt.dry_run:
        opt.n_per_class, opt.batch_size, opt.grid_cols = 20, 64, 4
        opt.out_dir = opt.out_dir or Path(tempfile.mkdtemp(prefix="product_gan_eval_"))
    return opt


def load_inputs(opt: argparse.Namespace) -> Inputs:
    """The classifier, the generator (unless skipped) and the photos: random and fake for a dry run."""
    if opt.dry_run:
        model = ProductClassifier().eval()
        x_train, y_train = fake_products(200, seed=0)
        x_real, y_real = fake_products(100, seed=1)
        g = None if opt.skip_generator else Generator(ngf=16).eval()
        dry = "random weights (dry run)"
        return Inputs(
            model, g, x_train, y_train, x_real, y_real, dry, dry, None, "fake random images (dry run)"
        )
    model = load_classifier(opt.classifier)
    clf_meta = _meta(opt.classifier)
    clf_desc = f"`{opt.classifier}` (held-out accuracy at training {_pct(clf_meta.get('heldout_accuracy'))})"
    x_train, y_train = load_products(opt.data_dir, split="train")
    x_real, y_real = load_products(opt.data_dir, split="heldout")
    data_desc = f"`{opt.data_dir}`: train split {len(y_train):,}, held-out split {len(y_real):,} photos"
    g, gen_desc = None, "not evaluated"
    if not opt.skip_generator:
        g = generator_from_checkpoint(opt.generator)
        gm = _meta(opt.generator)
        gan_command = str(gm.get("command", "?")).strip()
        gen_desc = f"`{opt.generator}` ({gm.get('iters', '?')} iters; `{gan_command}`)"
    return Inputs(
        model, g, x_train, y_train, x_real, y_real, gen_desc, clf_desc, clf_meta.get("command"), data_desc
    )


def measure_real(opt: argparse.Namespace, inp: Inputs) -> tuple[Evaluated, Evaluated, float, float]:
    """Real photos: classifier accuracy and the floors (train vs held-out, held-out half vs half)."""
    real = evaluate_real(inp.model, inp.x_real, inp.y_real, opt.batch_size, "classify held-out")
    train = evaluate_real(inp.model, inp.x_train, inp.y_train, opt.batch_size, "classify train")
    floor = fcd(train.feats, real.feats)
    perm = np.random.default_rng(0).permutation(len(inp.y_real))
    half = len(perm) // 2
    split_half = fcd(real.feats[perm[:half]], real.feats[perm[half : 2 * half]])
    print(f"real held-out accuracy {real.accuracy:.4f}; FCD floor train vs held-out {floor:.3f}")
    return real, train, floor, split_half


def measure_baseline(opt: argparse.Namespace, inp: Inputs, labels: np.ndarray) -> Evaluated:
    """Trivial baseline: class mean image + per-pixel Gaussian noise."""
    means, stds = class_mean_stats(inp.x_train, inp.y_train)
    batches = baseline_batches(means, stds, labels, opt.baseline_seed, opt.batch_size)
    return evaluate_stream(inp.model, batches, labels, opt.batch_size, "baseline")


def measure_generator(opt: argparse.Namespace, inp: Inputs, r: Results, labels: np.ndarray) -> None:
    """Generated images: accuracy, FCD, intra-FCD, and the sample grid (written to ``opt.out_dir``)."""
    assert inp.generator is not None
    r.gen = evaluate_stream(
        inp.model,
        generated_batches(inp.generator, labels, r.seeds, opt.batch_size),
        labels,
        opt.batch_size,
        "generate + classify",
        keep=first_per_class(labels, opt.grid_cols),
    )
    r.gen_fcd = fcd(r.gen.feats, r.real.feats)
    r.intra["generated"] = per_class_fcd(r.gen, r.real)
    r.png_name = "product_gan_eval.png"
    grid = make_grid(to_uint8_hwc(np.concatenate(r.gen.keep)), cols=opt.grid_cols)
    save_png(grid, opt.out_dir / r.png_name)
    ratio = r.gen.accuracy / r.real.accuracy
    print(f"generated accuracy {r.gen.accuracy:.4f} (ratio {ratio:.3f}), FCD {r.gen_fcd:.3f}")


def main(argv: list[str] | None = None) -> None:
    opt = parse(argv)
    print(opt)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(0)
    command = shlex.join(["python", "-m", "training.metrics", *(sys.argv[1:] if argv is None else argv)])
    timings: dict[str, float] = {}
    t0, cpu0 = time.time(), time.process_time()
    inp = load_inputs(opt)
    opt.out_dir = opt.out_dir or DEFAULT_OUT_DIR
    opt.out_dir.mkdir(parents=True, exist_ok=True)
    timings["load"] = time.time() - t0

    t = time.time()
    real, train, floor, split_half = measure_real(opt, inp)
    timings["real"] = time.time() - t

    t = time.time()
    labels = balanced_labels(opt.n_per_class)
    base = measure_baseline(opt, inp, labels)
    base_fcd = fcd(base.feats, real.feats)
    timings["baseline"] = time.time() - t
    print(f"baseline accuracy {base.accuracy:.4f}, FCD {base_fcd:.3f}")

    intra = {"floor": per_class_fcd(train, real), "baseline": per_class_fcd(base, real)}
    seeds = opt.seed_offset + np.arange(len(labels), dtype=np.int64)
    r = Results(real, train, base, floor, split_half, base_fcd, intra, seeds)
    if inp.generator is not None:
        t = time.time()
        measure_generator(opt, inp, r, labels)
        timings["generated"] = time.time() - t
    timings["total"] = time.time() - t0
    timings["total CPU time"] = time.process_time() - cpu0

    md = opt.out_dir / "product_gan_eval.md"
    write_report(md, command, inp, r, opt.n_per_class, timings)
    print(f"wrote {md}" + (f" and {opt.out_dir / r.png_name}" if r.png_name else ""))


if __name__ == "__main__":
    main()
