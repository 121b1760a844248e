"""The README's pictures of real served outputs: the studio (a cut-out, a white main image and scenes
from a fixture photo, and an ad for the same upload), ad creatives, inventory states, a sheet.

Calls a running server (``make serve``) through the thin client and composes what it returns
into PNG contact sheets under ``docs/``; every tile is a file the server encoded and labelled.

    .venv/bin/python docs/gallery.py --url localhost:8001
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

from PIL import Image, ImageDraw

from ecomgen_client import ProductClient, SheetItem

DOCS = Path(__file__).resolve().parent
GAP, BACKGROUND = 16, (245, 245, 245)


def row(images: list[Image.Image], height: int, captions: list[str] | None = None) -> Image.Image:
    """The images scaled to one height, side by side, with optional captions underneath."""
    scaled = [im.convert("RGB").resize((round(im.width * height / im.height), height)) for im in images]
    caption_h = 22 if captions else 0
    width = sum(im.width for im in scaled) + GAP * (len(scaled) + 1)
    out = Image.new("RGB", (width, height + 2 * GAP + caption_h), BACKGROUND)
    draw = ImageDraw.Draw(out)
    x = GAP
    for i, im in enumerate(scaled):
        out.paste(im, (x, GAP))
        if captions:
            draw.text((x, GAP + height + 4), captions[i], fill=(40, 40, 40))
        x += im.width + GAP
    return out


def stack(rows: list[Image.Image]) -> Image.Image:
    width = max(r.width for r in rows)
    out = Image.new("RGB", (width, sum(r.height for r in rows)), BACKGROUND)
    y = 0
    for r in rows:
        out.paste(r, (0, y))
        y += r.height
    return out


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


PHOTO = DOCS.parent / "tests" / "fixtures" / "viton" / "test" / "cloth" / "000010_1.jpg"


def on_checkerboard(im: Image.Image, cell: int = 12) -> Image.Image:
    """An RGBA cut-out over a grey checkerboard, the way editors show transparency."""
    board = Image.new("RGB", im.size, (255, 255, 255))
    draw = ImageDraw.Draw(board)
    for y in range(0, im.height, cell):
        for x in range((y // cell) % 2 * cell, im.width, 2 * cell):
            draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(214, 214, 214))
    board.paste(im.convert("RGB"), (0, 0), im.getchannel("A"))
    return board


def studio(client: ProductClient) -> Image.Image:
    """The README's "From your own photo": the photo, its cut-out, the white main image, 3 scenes, an ad."""
    photo = Image.open(PHOTO).convert("RGB")
    cut = on_checkerboard(client.cutout_rgba(photo))
    (main,) = client.product_scene(PHOTO, scene="white", format="2000x2000")
    scenes = client.product_scene(PHOTO, scene="auto", format="1080x1350", variants=3)
    (ad,) = client.ad_creatives(
        "Bell-sleeve jersey top", "39.90", "EUR", product=PHOTO.read_bytes(), variants=1,
        cta="Shop now", format="1080x1350",
    )  # fmt: skip
    tiles = [photo, cut, decode(main), *(decode(s) for s in scenes), decode(ad)]
    captions = ["the photo", "product_cutout", "white (2000x2000)", "auto scene 1", "2", "3", "ad_creative"]
    return row(tiles, 360, captions)


def ads(client: ProductClient) -> Image.Image:
    square = client.ad_creatives(
        "Chrono 42 steel watch", "129.00", "EUR", class_id="Watches", seed=3, variants=3,
        badge="-20%", cta="Shop now", brand_colour="#0A3D62", format="1080x1080",
    )  # fmt: skip
    portrait = client.ad_creatives(
        "Leichte Ledertasche für jeden Tag", "89.90", "EUR", class_id="Handbags", seed=11, variants=2,
        badge="Neu", cta="Jetzt kaufen", format="1080x1350",
    )  # fmt: skip
    story = client.ad_creatives(
        "夏のサングラス", "4980", "JPY", class_id="Sunglasses", seed=5, variants=1, cta="今すぐ購入",
        format="1080x1920",
    )  # fmt: skip
    wide = client.ad_creatives(
        "Canvas sneakers", "59.00", "GBP", class_id="Casual Shoes", seed=8, variants=1,
        badge="Bestseller", format="1200x628",
    )  # fmt: skip
    top = row([decode(d) for d in square + portrait + story], 360)
    return stack([top, row([decode(d) for d in wide], 240)])


def inventory(client: ProductClient) -> tuple[Image.Image, Image.Image]:
    states = [
        ("in stock (40)", {"stock": 40}),
        ("low stock (2 of 5)", {"stock": 2, "low_stock_threshold": 5}),
        ("sold out", {"stock": 0}),
        ("back-order", {"stock": 0, "restock_date": "2026-12-24"}),
    ]
    tiles = [decode(client.inventory_image(class_id="Heels", seed=3, **kw)) for _, kw in states]
    items = [
        SheetItem(f"SKU-{i:04d}", stock, cls, seed=i, low_stock_threshold=5, restock_date=date)
        for i, (cls, stock, date) in enumerate(
            [
                ("Watches", 12, None), ("Heels", 2, None), ("Handbags", 0, "2026-12-24"),
                ("Sunglasses", 0, None), ("Dresses", 30, None), ("Jeans", 4, None),
                ("Tshirts", 0, "2027-01-08"), ("Casual Shoes", 18, None), ("Shirts", 1, None),
                ("Tops", 9, None), ("Watches", 0, None), ("Handbags", 25, None),
            ]
        )
    ]  # fmt: skip
    sheet = decode(client.inventory_sheet(items, title="Aisle 4"))
    return row(tiles, 320, [name for name, _ in states]), sheet


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="localhost:8001")
    p.add_argument("--out", type=Path, default=DOCS)
    opt = p.parse_args()
    with ProductClient(opt.url, timeout_s=120) as client:
        studio_row = studio(client)
        ad_grid = ads(client)
        states, sheet = inventory(client)
    opt.out.mkdir(parents=True, exist_ok=True)
    studio_row.save(opt.out / "gallery-studio.png", optimize=True)
    ad_grid.save(opt.out / "gallery-ads.png", optimize=True)
    states.save(opt.out / "gallery-inventory.png", optimize=True)
    sheet.thumbnail((1200, 1200))
    sheet.save(opt.out / "gallery-sheet.png", optimize=True)
    names = ("gallery-studio.png", "gallery-ads.png", "gallery-inventory.png", "gallery-sheet.png")
    print("wrote", *(opt.out / n for n in names))


if __name__ == "__main__":
    main()
