"""Loaders for the product-photo data.

Reads the layout of Kaggle's "Fashion Product Images (Small)": ``styles.csv`` plus
``images/<id>.jpg``. The 4,500-image subset in ``../shared/data/fashion-products``
has that layout, and so does a user's own full download (44k rows, where the
original CSV has unquoted commas in ``productDisplayName``).
"""

from __future__ import annotations

import csv
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from ecomgen_client.contracts import PRODUCT_CLASSES, PRODUCT_IMAGE_HW
from training.paths import SHARED_DATA

DEFAULT_PRODUCTS_DIR = Path(os.environ.get("ECOMGEN_PRODUCTS_DIR", SHARED_DATA / "fashion-products"))


@dataclass(frozen=True)
class ProductRecord:
    id: str
    label: int
    path: Path


def read_styles(root: Path, classes: tuple[str, ...] = PRODUCT_CLASSES) -> list[ProductRecord]:
    """Rows of ``styles.csv`` whose articleType is one of ``classes`` and whose image exists."""
    root = Path(root)
    csv_path = root / "styles.csv"
    if not csv_path.exists():
        raise FileNotFoundError(f"{csv_path} not found: expected the Kaggle fashion-product layout")
    index = {c: i for i, c in enumerate(classes)}
    records = []
    with csv_path.open(newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        col_id, col_type = header.index("id"), header.index("articleType")
        for row in reader:
            # Extra fields only appear past articleType, so indexing stays valid.
            if len(row) <= col_type or row[col_type] not in index:
                continue
            path = root / "images" / f"{row[col_id]}.jpg"
            if path.exists():
                records.append(ProductRecord(row[col_id], index[row[col_type]], path))
    if not records:
        raise ValueError(f"no images of classes {classes} under {root}")
    return records


def is_heldout(record_id: str, fraction: float = 0.2) -> bool:
    """Stable split by id hash: the same image lands in the same split everywhere."""
    h = int(hashlib.sha256(record_id.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def load_image(path: Path, hw: tuple[int, int] = PRODUCT_IMAGE_HW) -> np.ndarray:
    """An RGB uint8 HWC array resized to ``hw`` (grayscale photos become RGB)."""
    with Image.open(path) as f:
        im = f.convert("RGB")
    if im.size != (hw[1], hw[0]):
        im = im.resize((hw[1], hw[0]), Image.Resampling.BICUBIC)
    return np.asarray(im, dtype=np.uint8)


def load_products(
    root: Path = DEFAULT_PRODUCTS_DIR,
    split: str = "train",
    limit: int | None = None,
    progress: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a split as (uint8 NCHW tensor, int64 labels).

    ``split`` is ``train``, ``heldout`` or ``all``. The whole set fits in memory
    (4,500 x 3 x 64 x 48 bytes is 41 MB), which keeps the CPU training loop fast.
    """
    if split not in ("train", "heldout", "all"):
        raise ValueError(f"split must be train, heldout or all, not {split!r}")
    records = read_styles(Path(root))
    if split != "all":
        records = [r for r in records if is_heldout(r.id) == (split == "heldout")]
    if limit is not None:
        records = records[:limit]
    images = np.stack([load_image(r.path) for r in tqdm(records, desc=f"load {split}", disable=not progress)])
    labels = torch.tensor([r.label for r in records], dtype=torch.int64)
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels


def fake_products(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random images with the real shapes, for ``--dataset fake`` smoke runs."""
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, *PRODUCT_IMAGE_HW), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % len(PRODUCT_CLASSES)
    return images, labels


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [-1, 1]."""
    return images.float().div_(127.5).sub_(1.0)
