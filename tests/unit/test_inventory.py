"""Inventory: the stock-state table, input errors naming their field, overlays and contact sheets."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ecomgen.creative.inventory import (
    DEFAULT_LOW_STOCK_THRESHOLD,
    MIN_SIDE,
    State,
    render_inventory,
    render_sheet,
    stock_state,
    validate_sku,
)
from ecomgen.errors import RequestError
from ecomgen_client.contracts import INVENTORY_MAX_SIDE, INVENTORY_SHEET, SHEET_MAX_HW
from ecomgen_client.ops import SheetItem, inventory_sheet

TODAY = date(2026, 12, 1)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "fashion-products" / "images"


def product(name: str = "2697.jpg") -> np.ndarray:
    img = Image.open(FIXTURES / name).convert("RGB")
    return np.asarray(img.resize((192, 256), Image.Resampling.LANCZOS))


@pytest.mark.parametrize(
    "stock, threshold, restock, kind, label",
    [
        (40, None, None, "in_stock", "In stock"),
        (6, None, None, "in_stock", "In stock"),  # default threshold is 5
        (5, None, None, "low_stock", "Only 5 left"),
        (1, None, None, "low_stock", "Only 1 left"),
        (3, 2, None, "in_stock", "In stock"),
        (10, 10, None, "low_stock", "Only 10 left"),
        (3, 5, "2026-12-12", "low_stock", "Only 3 left"),  # a restock date does not matter while in stock
        (0, None, None, "sold_out", "Sold out"),
        (0, 5, None, "sold_out", "Sold out"),
        (0, None, "2026-12-12", "back_order", "Back on 12 Dec"),
        (0, None, "2027-01-09", "back_order", "Back on 9 Jan 2027"),
        (0, None, "2026-12-01", "back_order", "Back today"),
    ],
)
def test_state_table(stock: int, threshold: int | None, restock: str | None, kind: str, label: str) -> None:
    s = stock_state(stock, threshold, restock, TODAY)
    assert (s.kind, s.label, s.stock) == (kind, label, stock)


def test_without_a_threshold_the_default_applies() -> None:
    """No threshold: DEFAULT_LOW_STOCK_THRESHOLD units or fewer are low stock, one more is in stock."""
    at = stock_state(DEFAULT_LOW_STOCK_THRESHOLD, None, None, TODAY)
    above = stock_state(DEFAULT_LOW_STOCK_THRESHOLD + 1, None, None, TODAY)
    assert (at.kind, at.label) == ("low_stock", f"Only {DEFAULT_LOW_STOCK_THRESHOLD} left")
    assert above.kind == "in_stock"


def test_a_sheet_item_without_a_threshold_is_judged_as_if_alone() -> None:
    """When one SKU of a sheet has a threshold, the client fills in the others' (a batched input
    cannot have holes): what it fills must be the server's default, or an SKU's state would depend
    on its neighbours on the sheet."""
    items = [
        SheetItem("A-1", stock=1, class_id=0, low_stock_threshold=9),
        SheetItem("B-2", stock=DEFAULT_LOW_STOCK_THRESHOLD, class_id=0),
        SheetItem("C-3", stock=DEFAULT_LOW_STOCK_THRESHOLD + 1, class_id=0),
    ]
    filled = inventory_sheet(items).inputs["low_stock_threshold"]
    for item, threshold in zip(items[1:], filled[1:].tolist(), strict=True):
        alone = stock_state(item.stock, None, None, TODAY)
        assert stock_state(item.stock, threshold, None, TODAY) == alone, item.sku


@pytest.mark.parametrize(
    "stock, threshold, restock, field",
    [
        (-1, None, None, "stock"),
        (True, None, None, "stock"),
        (2.5, None, None, "stock"),
        (3, 0, None, "low_stock_threshold"),
        (3, -4, None, "low_stock_threshold"),
        (0, None, "12/12/2026", "restock_date"),
        (0, None, "2026-02-30", "restock_date"),
        (0, None, "2026-11-30", "restock_date"),  # in the past
        (0, None, b"\xff", "restock_date"),
    ],
)
def test_bad_inputs_name_their_field(stock, threshold, restock, field: str) -> None:
    with pytest.raises(RequestError) as e:
        stock_state(stock, threshold, restock, TODAY)
    assert str(e.value).startswith(f"{field}:"), str(e.value)


def test_sku_validation() -> None:
    assert validate_sku(b" SKU-1 ") == "SKU-1"
    for bad in ("", "A" * 33, "SKU\n1", "SKU 🔥"):
        with pytest.raises(RequestError, match=r"^sku:"):
            validate_sku(bad)


def saturation(img: np.ndarray) -> float:
    return float(np.asarray(Image.fromarray(img).convert("HSV"))[..., 1].mean())


def test_overlays_differ_and_sold_out_is_desaturated() -> None:
    p = product()
    states = [
        stock_state(40, None, None, TODAY),
        stock_state(3, None, None, TODAY),
        stock_state(0, None, None, TODAY),
        stock_state(0, None, "2026-12-12", TODAY),
    ]
    outs = [render_inventory(p, s) for s in states]
    for o in outs:
        assert o.dtype == np.uint8 and min(o.shape[:2]) >= MIN_SIDE
        assert o.shape[0] * 192 == o.shape[1] * 256  # aspect kept
    for i in range(4):
        for j in range(i + 1, 4):
            assert np.abs(outs[i].astype(int) - outs[j].astype(int)).mean() > 5, (i, j)
    base = np.asarray(Image.fromarray(p).resize(outs[0].shape[1::-1], Image.Resampling.LANCZOS))
    assert saturation(outs[2]) < 0.2 * saturation(base)  # sold out: grey (the label band is grey too)


def test_sheet_sizes() -> None:
    p = product()
    one = render_sheet([(p, "SKU-1", stock_state(4, None, None, TODAY))])
    assert one.dtype == np.uint8 and one.shape == (150 + 382 + 36, 960, 3)
    items = [(p, f"SKU-{i:04d}", stock_state(i % 7, None, None, TODAY)) for i in range(64)]
    full = render_sheet(items)
    # 8 x 8 cells of 216 x 382 with 18 px gaps, 36 px margins, a 150 px header.
    assert full.shape == (150 + 8 * 382 + 7 * 18 + 36, 8 * 216 + 7 * 18 + 2 * 36, 3)
    # The contract's bound, which /dev/shm and the pod's memory are sized for.
    assert full.shape[0] <= SHEET_MAX_HW[0] and full.shape[1] <= SHEET_MAX_HW[1]
    with pytest.raises(RequestError, match=r"^items:"):
        render_sheet(items + items[:1])
    with pytest.raises(RequestError, match=r"^items:"):
        render_sheet([])


def test_sheet_colours_cells_by_state() -> None:
    p = product()
    kinds: list[State] = [
        stock_state(20, None, None, TODAY),
        stock_state(2, None, None, TODAY),
        stock_state(0, None, None, TODAY),
        stock_state(0, None, "2026-12-24", TODAY),
    ]
    sheet = render_sheet([(p, f"SKU-{i}", s) for i, s in enumerate(kinds)])
    from ecomgen.creative.inventory import COLOURS

    # The state bar under each cell's image, at its left edge (x = cell start + 3).
    grid_w = 4 * 216 + 3 * 18
    x0 = (sheet.shape[1] - grid_w) // 2
    for i, s in enumerate(kinds):
        px = sheet[150 + 288 + 18, x0 + i * (216 + 18) + 3]
        assert np.abs(px.astype(int) - np.array(COLOURS[s.kind])).max() <= 2, (s.kind, px)


def test_long_sku_wraps_without_clipping() -> None:
    p = product()
    sheet = render_sheet([(p, "VERY-LONG-SKU-CODE-1234567890-AB", stock_state(9, None, None, TODAY))])
    assert sheet.shape[0] > 0


def test_an_inventory_image_is_bounded_whatever_was_uploaded() -> None:
    state = stock_state(3, None, None, TODAY)
    for h, w in ((4096, 4096), (4096, 32), (32, 4096)):
        out = render_inventory(np.full((h, w, 3), 200, np.uint8), state)
        assert max(out.shape[:2]) <= INVENTORY_MAX_SIDE, (h, w, out.shape)


def test_the_largest_encoded_output_fits_its_declared_bound() -> None:
    """Incompressible pixels at the largest declared size, labelled: within the contract's max_bytes."""
    from ecomgen.creative.provenance import encode_labelled

    h, w = SHEET_MAX_HW
    noise = np.random.default_rng(0).integers(0, 256, (h, w, 3), np.uint8)
    blob = encode_labelled(noise, "png", watermark=False)
    assert len(blob) <= INVENTORY_SHEET.output("sheet").max_bytes
