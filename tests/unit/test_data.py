"""Product-photo loader on committed fixtures in the Kaggle layout."""

from __future__ import annotations

import pytest
import torch

from ecomgen_client.contracts import PRODUCT_CLASSES
from training.data import fake_products, is_heldout, load_products, read_styles, to_float


def test_reads_the_kaggle_layout_and_skips_other_rows(fixture_products):
    records = read_styles(fixture_products)
    # 10 classes + the row with an unquoted comma in its name; Clutches/Kurtas and rows
    # without an image are skipped.
    assert sorted({r.label for r in records}) == list(range(10))
    assert len(records) == 11
    assert {r.id for r in records if r.id.startswith("9999")} == {"99990001"}


def test_load_products_shapes_and_dtype(fixture_products):
    images, labels = load_products(fixture_products, split="all", progress=False)
    assert images.shape == (11, 3, 64, 48) and images.dtype == torch.uint8
    assert labels.dtype == torch.int64 and int(labels.max()) == len(PRODUCT_CLASSES) - 1
    x = to_float(images)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0


def test_split_is_stable_and_disjoint(fixture_products):
    train, _ = load_products(fixture_products, split="train", progress=False)
    held, _ = load_products(fixture_products, split="heldout", progress=False)
    assert train.shape[0] + held.shape[0] == 11
    assert is_heldout("1547") == is_heldout("1547")
    frac = sum(is_heldout(str(i)) for i in range(5000)) / 5000
    assert 0.17 < frac < 0.23


def test_missing_or_wrong_layout_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"styles\.csv"):
        read_styles(tmp_path)
    (tmp_path / "styles.csv").write_text("id,articleType\n1,Kurtas\n")
    with pytest.raises(ValueError, match="no images"):
        read_styles(tmp_path)
    with pytest.raises(ValueError, match="split"):
        load_products(tmp_path, split="test")


def test_fake_products_match_real_shapes():
    images, labels = fake_products(8)
    assert images.shape == (8, 3, 64, 48) and labels.tolist() == [0, 1, 2, 3, 4, 5, 6, 7]
