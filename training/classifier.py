"""product_classifier: a compact CNN over the 10 product classes, used to evaluate product_gan.

Four conv blocks (conv3x3-BN-ReLU, max-pool) narrow 64x48 to 4x3, a global average
pool and a 128-d fully connected "feature" layer feed a linear head. The feature
layer is the embedding for FCD (Frechet Classifier Distance) in ``training.metrics``.
Trained on the real train split with flip and small-translation augmentation, and
scored on the held-out split.

    python -m training.classifier                            # full run (CPU, a few minutes)
    python -m training.classifier --dataset fake --dry-run   # smoke test
"""

from __future__ import annotations

import argparse
import itertools
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

from ecomgen_client.contracts import PRODUCT_CLASSES
from training.data import DEFAULT_PRODUCTS_DIR, fake_products, load_products, to_float
from training.paths import CHECKPOINT_DIR

NUM_CLASSES = len(PRODUCT_CLASSES)
FEATURE_DIM = 128
DEFAULT_CHECKPOINT = CHECKPOINT_DIR / "product_classifier.safetensors"


# --- model -----------------------------------------------------------------------


def conv_block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class ProductClassifier(nn.Module):
    """image [B, 3, 64, 48] in [-1, 1] -> logits [B, num_classes]; ``embed`` gives the 128-d features."""

    def __init__(self, width: int = 32, feature_dim: int = FEATURE_DIM, num_classes: int = NUM_CLASSES):
        super().__init__()
        self.width, self.feature_dim, self.num_classes = width, feature_dim, num_classes
        chans = [3, width, 2 * width, 4 * width, 8 * width]
        self.body = nn.Sequential(*(conv_block(a, b) for a, b in itertools.pairwise(chans)))
        self.feature = nn.Sequential(
            nn.Linear(chans[-1], feature_dim, bias=False),
            nn.BatchNorm1d(feature_dim),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.feature(self.body(x).mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


# --- inference helpers used by metrics and tests ---------------------------------


def load_classifier(path: str | Path = DEFAULT_CHECKPOINT) -> ProductClassifier:
    """Load the fp16 safetensors checkpoint (+ its .json) into an fp32 eval-mode classifier."""
    meta = json.loads(Path(path).with_suffix(".json").read_text())
    model = ProductClassifier(meta["width"], meta["feature_dim"], meta["num_classes"])
    state = {k: v.float() for k, v in load_file(str(path)).items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or any(not k.endswith("num_batches_tracked") for k in missing):
        raise ValueError(f"{path}: checkpoint does not match ProductClassifier: {missing=} {unexpected=}")
    return model.eval()


def as_model_input(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] (NCHW or NHWC) or float NCHW in [-1, 1] -> float NCHW tensor in [-1, 1]."""
    x = torch.as_tensor(images)
    if x.ndim != 4:
        raise ValueError(f"expected a 4-d image batch, got shape {tuple(x.shape)}")
    if x.shape[1] != 3 and x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    if x.dtype == torch.uint8:
        return to_float(x.contiguous())
    return x.float().contiguous()


@torch.no_grad()
def _batched(
    fn: Callable[[torch.Tensor], torch.Tensor],
    images: np.ndarray | torch.Tensor,
    batch_size: int,
    progress: str | None,
) -> np.ndarray:
    n = len(images)
    starts = range(0, n, batch_size)
    outs = [
        fn(as_model_input(images[i : i + batch_size])).numpy()
        for i in tqdm(starts, desc=progress, disable=progress is None, leave=False)
    ]
    return np.concatenate(outs) if outs else np.zeros((0,), np.float32)


def features(
    model: ProductClassifier,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 500,
    progress: str | None = None,
) -> np.ndarray:
    """Penultimate 128-d features [N, feature_dim] (float32) of a uint8 or [-1, 1] float batch."""
    model.eval()
    return _batched(model.embed, images, batch_size, progress)


def logits(
    model: ProductClassifier,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 500,
    progress: str | None = None,
) -> np.ndarray:
    model.eval()
    return _batched(model, images, batch_size, progress)


def predict(
    model: ProductClassifier,
    images: np.ndarray | torch.Tensor,
    batch_size: int = 500,
    progress: str | None = None,
) -> np.ndarray:
    """Predicted class ids [N] (int64)."""
    return logits(model, images, batch_size, progress).argmax(axis=1)


@torch.no_grad()
def features_and_predictions(
    model: ProductClassifier, images: np.ndarray | torch.Tensor
) -> tuple[np.ndarray, np.ndarray]:
    """Features and predicted class ids of one batch, from a single forward pass."""
    model.eval()
    f = model.embed(as_model_input(images))
    return f.numpy(), model.head(f).argmax(1).numpy()


# --- training ----------------------------------------------------------------------


def augment(x: torch.Tensor, max_shift: int) -> torch.Tensor:
    """Random horizontal flip and an integer translation of up to ``max_shift`` px (edge padded)."""
    b, _, h, w = x.shape
    flip = torch.rand(b) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if max_shift <= 0:
        return x
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    dy = torch.randint(0, 2 * max_shift + 1, (b,)).tolist()
    dx = torch.randint(0, 2 * max_shift + 1, (b,)).tolist()
    return torch.stack(
        [padded[i, :, y : y + h, s : s + w] for i, (y, s) in enumerate(zip(dy, dx, strict=True))]
    )


def accuracy(model: ProductClassifier, images: torch.Tensor, labels: torch.Tensor) -> float:
    return float((predict(model, images) == labels.numpy()).mean())


def state_fp16(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.half().contiguous() for k, v in model.state_dict().items() if v.is_floating_point()}


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=["products", "fake"], default="products")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_PRODUCTS_DIR)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (one-cycle AdamW)")
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--width", type=int, default=32, help="channels of the first conv block")
    p.add_argument("--max-shift", type=int, default=4, help="translation augmentation, pixels")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0 = torch default)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", type=Path, default=None, help=f"default: {DEFAULT_CHECKPOINT}")
    p.add_argument("--dry-run", action="store_true", help="one short epoch; default checkpoint in a temp dir")
    return p.parse_args(argv)


Split = tuple[torch.Tensor, torch.Tensor]


def load_data(opt: argparse.Namespace) -> tuple[Split, Split, str]:
    """(train images, labels), (held-out images, labels) and a description of the data."""
    if opt.dataset == "fake":
        return fake_products(128, opt.seed), fake_products(64, opt.seed + 1), "fake (random images)"
    x_train, y_train = load_products(opt.data_dir, split="train")
    x_test, y_test = load_products(opt.data_dir, split="heldout")
    desc = f"{opt.data_dir} (train split: {len(y_train)} images, held-out split: {len(y_test)})"
    return (x_train, y_train), (x_test, y_test), desc


def train(opt: argparse.Namespace, model: ProductClassifier, train_set: Split, test_set: Split) -> list[dict]:
    """One-cycle AdamW with label smoothing and augmentation; the per-epoch history."""
    (x_train, y_train), (x_test, y_test) = train_set, test_set
    optim = torch.optim.AdamW(model.parameters(), lr=opt.lr, weight_decay=opt.weight_decay)
    steps_per_epoch = (len(y_train) + opt.batch_size - 1) // opt.batch_size
    if opt.dry_run:
        steps_per_epoch = min(steps_per_epoch, 2)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        optim, max_lr=opt.lr, total_steps=opt.epochs * steps_per_epoch, pct_start=0.2
    )
    x_train_f = to_float(x_train)
    history: list[dict[str, float]] = []
    for epoch in range(1, opt.epochs + 1):
        model.train()
        perm = torch.randperm(len(y_train))
        bar = tqdm(range(steps_per_epoch), desc=f"epoch {epoch}/{opt.epochs}", dynamic_ncols=True)
        total, correct, loss_sum = 0, 0, 0.0
        for step in bar:
            idx = perm[step * opt.batch_size : (step + 1) * opt.batch_size]
            x, y = augment(x_train_f[idx], opt.max_shift), y_train[idx]
            out = model(x)
            loss = F.cross_entropy(out, y, label_smoothing=opt.label_smoothing)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            optim.step()
            sched.step()
            total += len(y)
            correct += int((out.argmax(1) == y).sum())
            loss_sum += loss.item() * len(y)
            bar.set_postfix(loss=f"{loss_sum / total:.3f}", acc=f"{correct / total:.3f}")
        test_acc = accuracy(model, x_test, y_test)
        train_loss, train_acc = loss_sum / total, correct / total
        history.append({"epoch": epoch, "loss": train_loss, "train_acc": train_acc, "heldout_acc": test_acc})
        print(f"epoch {epoch}: train loss {train_loss:.3f} acc {train_acc:.3f}, held-out acc {test_acc:.4f}")
    return history


def save_and_score(opt: argparse.Namespace, model: ProductClassifier, meta: dict, test_set: Split) -> None:
    """Write the fp16 checkpoint and its JSON, then score the weights as shipped (fp16), not the fp32
    ones in memory, and add the held-out accuracy to the JSON."""
    x_test, y_test = test_set
    opt.checkpoint.parent.mkdir(parents=True, exist_ok=True)
    save_file(state_fp16(model), str(opt.checkpoint))
    opt.checkpoint.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    shipped = load_classifier(opt.checkpoint)
    pred = predict(shipped, x_test)
    meta["heldout_accuracy"] = float((pred == y_test.numpy()).mean())
    meta["heldout_per_class_accuracy"] = {
        name: float((pred[y_test.numpy() == c] == c).mean()) if (y_test == c).any() else None
        for c, name in enumerate(PRODUCT_CLASSES)
    }
    opt.checkpoint.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"held-out accuracy (fp16 weights): {meta['heldout_accuracy']:.4f}")
    print(f"wrote {opt.checkpoint}")


def main(argv: list[str] | None = None) -> None:
    opt = parse(argv)
    print(opt)
    if opt.threads:
        torch.set_num_threads(opt.threads)
    torch.manual_seed(opt.seed)
    np.random.seed(opt.seed)
    train_set, test_set, data_desc = load_data(opt)
    if opt.dry_run:
        opt.epochs = 1
        if opt.checkpoint is None:
            opt.checkpoint = Path(tempfile.mkdtemp(prefix="product_classifier_")) / DEFAULT_CHECKPOINT.name
    opt.checkpoint = opt.checkpoint or DEFAULT_CHECKPOINT
    print(f"{len(train_set[1])} train / {len(test_set[1])} held-out images, {NUM_CLASSES} classes")

    model = ProductClassifier(width=opt.width)
    print(f"classifier {sum(q.numel() for q in model.parameters()) / 1e6:.2f}M params")
    start, cpu_start = time.time(), time.process_time()
    history = train(opt, model, train_set, test_set)
    wall, cpu = time.time() - start, time.process_time() - cpu_start
    print(f"trained {opt.epochs} epochs in {wall / 60:.1f} min")
    meta = {
        "model": "product_classifier",
        "width": opt.width,
        "feature_dim": model.feature_dim,
        "num_classes": NUM_CLASSES,
        "class_names": list(PRODUCT_CLASSES),
        "command": shlex.join(
            ["python", "-m", "training.classifier", *(sys.argv[1:] if argv is None else argv)]
        ),
        "data": data_desc,
        "epochs": opt.epochs,
        "batch_size": opt.batch_size,
        "augmentation": f"horizontal flip, translation up to {opt.max_shift} px (edge padded)",
        "wall_time_s": round(wall, 1),
        "cpu_time_s": round(cpu, 1),  # differs from wall time on a shared machine
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "history": history,
        "weights": "fp16 safetensors",
    }
    save_and_score(opt, model, meta, test_set)


if __name__ == "__main__":
    main()
