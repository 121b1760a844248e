"""``ecomgen-client`` command line: generate product images, list classes, try garments on."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import _images
from .client import ProductClient
from .contracts import PRODUCT_GAN, STUDIO_FORMATS
from .errors import EcomgenError, InvalidInputError

__all__ = ["build_parser", "main", "parse_seeds"]

# A typo such as "0-1000000" should fail fast, not allocate gigabytes of images.
MAX_CLI_SEEDS = 10_000

_SEED_TOKEN = re.compile(r"^(\d+)(?:-(\d+))?$")


def parse_seeds(text: str, limit: int = MAX_CLI_SEEDS) -> list[int]:
    """``"0-15"`` (inclusive) and ``"1,5,9"``, combinable: ``"0-3,10,20-22"``. Order is kept."""
    seeds: list[int] = []
    for token in text.split(","):
        match = _SEED_TOKEN.match(token.strip())
        if match is None:
            raise ValueError(f"bad seed {token.strip()!r} in {text!r}: use N, N-M or a comma list of them")
        start = int(match.group(1))
        stop = int(match.group(2)) if match.group(2) is not None else start
        if stop < start:
            raise ValueError(f"bad seed range {token.strip()!r}: end is below start")
        if len(seeds) + (stop - start + 1) > limit:
            raise ValueError(f"{text!r} gives more than {limit} seeds")
        seeds.extend(range(start, stop + 1))
    return seeds


def _seeds_arg(text: str) -> list[int]:
    try:
        return parse_seeds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


Sub = Any  # argparse's _SubParsersAction


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--url",
        action="append",
        default=None,
        help="Triton gRPC host:port; repeat it (or give a comma list) for several servers "
        "(default localhost:8001)",
    )
    common.add_argument(
        "--timeout", type=float, default=None, help="seconds per request (default 30; batch 120)"
    )
    common.add_argument(
        "--retries", type=int, default=3, help="retries while UNAVAILABLE (default %(default)s)"
    )
    return common


def _add_products(sub: Sub, common: argparse.ArgumentParser) -> None:
    products = sub.add_parser("products", parents=[common], help="generate product images as PNG")
    products.add_argument(
        "--class",
        dest="cls",
        metavar="CLASS",
        required=True,
        help=f"class name or id, e.g. {PRODUCT_GAN.class_names[0]!r} or 0; 'all' = one grid row per class",
    )
    products.add_argument(
        "--seeds", type=_seeds_arg, default="0-15", help='e.g. "0-15" or "1,5,9" (default %(default)s)'
    )
    products.add_argument("--out", type=Path, required=True, help="PNG file (--grid) or directory (--each)")
    layout = products.add_mutually_exclusive_group()
    layout.add_argument("--grid", dest="each", action="store_false", help="one PNG grid (default)")
    layout.add_argument("--each", dest="each", action="store_true", help="one PNG per seed in --out")
    # Both flags share a dest; without this the store_false default (True) would win.
    products.set_defaults(each=False)
    products.add_argument("--cols", type=int, default=None, help="grid columns (default ~sqrt(N))")
    sub.add_parser("classes", parents=[common], help="print the class names the server reports")


def _add_tryon(sub: Sub, common: argparse.ArgumentParser) -> None:
    tryon = sub.add_parser(
        "tryon",
        parents=[common],
        help="dress a person photo in a garment photo; writes a side-by-side strip next to the person",
    )
    tryon.add_argument("person", type=Path, help="person photo (JPEG/PNG, 64-2048 px per side)")
    tryon.add_argument("garment", type=Path, help="catalogue garment photo on a plain background")
    tryon.add_argument(
        "--out",
        type=Path,
        default=None,
        help="PNG path (default: <person>_tryon_<garment>.png beside the person)",
    )
    tryon.add_argument("--debug", action="store_true", help="add the warped garment and mask to the strip")


def _add_detail(sub: Sub, common: argparse.ArgumentParser) -> None:
    detail = sub.add_parser(
        "detail",
        parents=[common],
        help="256x192 close-ups of product_gan images; writes thumbnail | close-up pairs as one PNG",
    )
    detail.add_argument("--class", dest="cls", metavar="CLASS", required=True, help="class name or id")
    detail.add_argument("--seeds", type=_seeds_arg, default="0-3", help="default %(default)s")
    detail.add_argument("--out", type=Path, required=True, help="PNG file")
    upscale = sub.add_parser(
        "upscale", parents=[common], help="x4 close-up of an image file (16-512 px a side)"
    )
    upscale.add_argument("image", type=Path)
    upscale.add_argument(
        "--out", type=Path, default=None, help="PNG path (default: <image>_x4.png beside it)"
    )


def _add_personalize(sub: Sub, common: argparse.ArgumentParser) -> None:
    pers = sub.add_parser(
        "personalize",
        parents=[common],
        help="new products in the style of a folder of browsed photos; writes history | generated | similar",
    )
    pers.add_argument("history", type=Path, help="folder of browsed product photos (JPEG/PNG/WebP, 1-32)")
    pers.add_argument("--count", type=int, default=8)
    pers.add_argument("--seed", type=int, default=0)
    pers.add_argument("--out", type=Path, required=True, help="PNG file")
    pers.add_argument(
        "--catalogue-dir",
        type=Path,
        default=None,
        help="the catalogue's photos (Kaggle layout: images/<id>.jpg) to draw the similar items; "
        "without it their ids are printed",
    )


def _add_product_choice(parser: argparse.ArgumentParser, first_seed: str = "") -> None:
    parser.add_argument("--class", dest="cls", metavar="CLASS", help="generated product: class name or id")
    parser.add_argument("--seed", type=int, default=0, help=first_seed or None)
    parser.add_argument("--product", type=Path, help="or an uploaded product photo (JPEG/PNG/WebP)")


def _add_ads(sub: Sub, common: argparse.ArgumentParser) -> None:
    ad = sub.add_parser(
        "ads", parents=[common], help="a batch of ad creatives for one product, labelled as AI"
    )
    _add_product_choice(ad, "first product seed (variant k uses seed+k)")
    ad.add_argument("--title", required=True)
    ad.add_argument("--price", required=True, help='e.g. "49.90"')
    ad.add_argument("--currency", required=True, help="ISO 4217 code or symbol, e.g. EUR")
    ad.add_argument("--badge")
    ad.add_argument("--cta")
    ad.add_argument("--brand-colour", help="#RRGGBB")
    ad.add_argument("--format", default="1080x1080", help="1080x1080, 1080x1350, 1200x628 or 1080x1920")
    ad.add_argument("--variants", type=int, default=4)
    ad.add_argument("--encoding", default="jpeg", choices=["jpeg", "png", "webp"])
    ad.add_argument("--out", type=Path, required=True, help="directory for the creatives (+ a preview grid)")


def _add_inventory(sub: Sub, common: argparse.ArgumentParser) -> None:
    inv = sub.add_parser("inventory", parents=[common], help="a product image with its stock state")
    _add_product_choice(inv)
    inv.add_argument("--stock", type=int, required=True)
    inv.add_argument("--low-stock-threshold", type=int)
    inv.add_argument("--restock-date", help="YYYY-MM-DD (with stock 0: back-order)")
    inv.add_argument("--out", type=Path, required=True, help="PNG file")
    sheet = sub.add_parser("sheet", parents=[common], help="a warehouse contact sheet of up to 64 SKUs")
    sheet.add_argument(
        "items", type=Path, help="CSV with columns sku,class,seed,stock[,low_stock_threshold,restock_date]"
    )
    sheet.add_argument("--title")
    sheet.add_argument("--out", type=Path, required=True, help="PNG file")


def _add_studio(sub: Sub, common: argparse.ArgumentParser) -> None:
    cut = sub.add_parser(
        "cutout", parents=[common], help="cut a product out of its photo: an RGBA PNG, labelled"
    )
    cut.add_argument("photo", type=Path, help="product photo (JPEG/PNG/WebP, 16 px a side or more)")
    cut.add_argument(
        "--out", type=Path, default=None, help="PNG path (default: <photo>_cutout.png beside it)"
    )
    cut.add_argument("--matte", type=Path, default=None, help="also write the matte as a greyscale PNG")
    scene = sub.add_parser(
        "scene", parents=[common], help="a product photo in a scene, or the white marketplace main image"
    )
    scene.add_argument("photo", type=Path, nargs="?", help="product photo (or --class and --seed)")
    scene.add_argument("--class", dest="cls", metavar="CLASS", help="generated product: class name or id")
    scene.add_argument("--seed", type=int, default=0)
    scene.add_argument("--scene", default="white", help="white, auto or a scene name (default white)")
    scene.add_argument("--format", default="2000x2000", help=f"one of {', '.join(STUDIO_FORMATS)}")
    scene.add_argument("--variants", type=int, default=1, help="1-8 images (default 1)")
    scene.add_argument("--encoding", default="png", choices=["png", "jpeg", "webp"])
    scene.add_argument("--out", type=Path, required=True, help="an image file, or a directory")


def _add_batch(sub: Sub, common: argparse.ArgumentParser) -> None:
    batch = sub.add_parser(
        "batch", parents=[common], help="every asset of a catalogue (CSV or JSON lines), resumable"
    )
    batch.add_argument("catalogue", type=Path, help="CSV or JSON-lines catalogue, one product a row")
    batch.add_argument("--out", type=Path, required=True, help="output directory (manifest.jsonl inside)")
    batch.add_argument(
        "--assets",
        default="cutout,white",
        help="comma list of cutout, white, scenes:N, ads:FORMAT[,FORMAT], inventory (default %(default)s)",
    )
    batch.add_argument("--concurrency", type=int, default=8, help="requests in flight (default %(default)s)")
    batch.add_argument("--white-format", default="2000x2000", help="white main image (default %(default)s)")
    batch.add_argument("--scene-format", default="1080x1350", help="scenes (default %(default)s)")
    batch.add_argument("--scene", default="auto", help="auto or a scene name (default %(default)s)")
    batch.add_argument("--encoding", default="png", choices=["png", "jpeg", "webp"], help="white and scenes")
    batch.add_argument("--ad-encoding", default="jpeg", choices=["jpeg", "png", "webp"])
    batch.add_argument("--no-progress", dest="progress", action="store_false", help="no progress line")


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog="ecomgen-client", description="Generate ecomgen product images through Triton (gRPC)."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for add in (
        _add_products,
        _add_tryon,
        _add_detail,
        _add_personalize,
        _add_ads,
        _add_inventory,
        _add_studio,
        _add_batch,
    ):
        add(sub, common)
    return parser


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _products(client: ProductClient, args: argparse.Namespace) -> None:
    seeds: list[int] = args.seeds
    if args.cls == "all":
        rows = [client.generate_products(i, seeds) for i in range(len(client.products_model.class_names))]
        grid = _images.make_grid(np.concatenate(rows), cols=len(seeds))
        path = _images.save_png(grid, args.out)
        print(f"wrote {path} ({len(rows)} classes x {len(seeds)} seeds, one row per class)")
        return
    images = client.generate_products(args.cls, seeds)
    if args.each:
        # Valid here: generate_products already resolved the class.
        slug = _slug(client.products_model.class_names[client.products_model.class_id(args.cls)])
        for seed, image in zip(seeds, images, strict=True):
            _images.save_png(image, args.out / f"{slug}_seed{seed}.png")
        print(f"wrote {len(images)} images to {args.out}/")
    else:
        path = _images.save_png(_images.make_grid(images, cols=args.cols), args.out)
        print(f"wrote {path} ({len(images)} images)")


def _tryon(client: ProductClient, args: argparse.Namespace) -> None:
    person, garment = _images.load_rgb(args.person), _images.load_rgb(args.garment)
    result = client.try_on_debug(person, garment)
    h, w = result.image.shape[:2]
    panels = [_images.fit(person, h, w), _images.fit(garment, h, w)]
    if args.debug:
        panels += [result.warped_garment, np.repeat(result.mask[..., None], 3, axis=2)]
    panels.append(result.image)
    out = args.out or args.person.with_name(f"{args.person.stem}_tryon_{args.garment.stem}.png")
    path = _images.save_png(_images.make_grid(np.stack(panels), cols=len(panels)), out)
    print(f"wrote {path} (person | garment{' | warped | mask' if args.debug else ''} | try-on)")


def _nearest(image: np.ndarray, scale: int) -> np.ndarray:
    """Pixel-replicated enlargement: shows a thumbnail at a close-up's size without inventing detail."""
    return image.repeat(scale, axis=0).repeat(scale, axis=1)


def _detail(client: ProductClient, args: argparse.Namespace) -> None:
    thumbs = client.generate_products(args.cls, args.seeds)
    closeups = client.product_detail(args.cls, args.seeds)
    scale = closeups.shape[1] // thumbs.shape[1]
    panels = np.stack([p for t, c in zip(thumbs, closeups, strict=True) for p in (_nearest(t, scale), c)])
    path = _images.save_png(_images.make_grid(panels, cols=2), args.out)
    print(f"wrote {path} ({len(thumbs)} rows: thumbnail enlarged {scale}x | close-up)")


def _personalize(client: ProductClient, args: argparse.Namespace) -> None:
    paths = sorted(
        p for p in args.history.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp")
    )
    history = [_images.load_rgb(p) for p in paths]
    result = client.personalize(history, args.count, args.seed)
    h, w = result.images.shape[1:3]
    rows = [np.stack([_images.fit(im, h, w) for im in history]), result.images]
    if args.catalogue_dir is not None:
        ids = result.similar[:, 0]
        found = [args.catalogue_dir / "images" / f"{i}.jpg" for i in ids]
        rows.append(
            np.stack(
                [
                    _images.fit(_images.load_rgb(f), h, w)
                    if f.exists()
                    else np.full((h, w, 3), 255, np.uint8)
                    for f in found
                ]
            )
        )
    cols = max(len(r) for r in rows)
    padded = [np.concatenate([r, np.full((cols - len(r), h, w, 3), 255, np.uint8)]) for r in rows]
    path = _images.save_png(_images.make_grid(np.concatenate(padded), cols=cols), args.out)
    print(
        f"wrote {path}: {len(history)} browsed | {len(result.images)} generated"
        + (" | nearest catalogue item of each" if args.catalogue_dir else "")
    )
    for k, ids in enumerate(result.similar):
        print(f"generated {k}: similar catalogue ids {ids.tolist()}")


def _product_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.product is not None:
        return {"product": args.product.read_bytes()}
    if args.cls is None:
        raise InvalidInputError("give --class (a generated product) or --product (a photo)")
    return {"class_id": args.cls, "seed": args.seed}


def _ads(client: ProductClient, args: argparse.Namespace) -> None:
    extra = {"badge": args.badge, "cta": args.cta, "brand_colour": args.brand_colour}
    creatives = client.ad_creatives(
        args.title,
        args.price,
        args.currency,
        variants=args.variants,
        format=args.format,
        encoding=args.encoding,
        **_product_args(args),
        **{k: v for k, v in extra.items() if v is not None},
    )
    args.out.mkdir(parents=True, exist_ok=True)
    ext = {"jpeg": "jpg"}.get(args.encoding, args.encoding)
    paths = []
    for k, data in enumerate(creatives):
        paths.append(args.out / f"ad_{args.format}_{k}.{ext}")
        paths[-1].write_bytes(data)
    previews = np.stack([_images.fit(_images.load_rgb(p), 360, 360) for p in paths])
    grid = _images.save_png(_images.make_grid(previews, cols=len(paths)), args.out / "preview.png")
    print(f"wrote {len(paths)} creatives to {args.out}/ and {grid.name}; check them with `ecomgen verify`")


def _inventory(client: ProductClient, args: argparse.Namespace) -> None:
    data = client.inventory_image(
        args.stock,
        low_stock_threshold=args.low_stock_threshold,
        restock_date=args.restock_date,
        **_product_args(args),
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out}")


def _sheet(client: ProductClient, args: argparse.Namespace) -> None:
    import csv

    from .ops import SheetItem

    with args.items.open(newline="") as f:
        rows = list(csv.DictReader(f))
    items = [
        SheetItem(
            sku=r["sku"],
            stock=int(r["stock"]),
            class_id=r["class"],
            seed=int(r.get("seed") or 0),
            low_stock_threshold=int(r["low_stock_threshold"]) if r.get("low_stock_threshold") else None,
            restock_date=r.get("restock_date") or None,
        )
        for r in rows
    ]
    data = client.inventory_sheet(items, title=args.title)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(data)
    print(f"wrote {args.out} ({len(items)} SKUs)")


def _upscale(client: ProductClient, args: argparse.Namespace) -> None:
    out = client.upscale(_images.load_rgb(args.image))
    path = _images.save_png(out, args.out or args.image.with_name(f"{args.image.stem}_x4.png"))
    print(f"wrote {path} ({out.shape[1]}x{out.shape[0]})")


def _classes(client: ProductClient) -> None:
    for i, name in enumerate(client.class_names()):
        print(f"{i}\t{name}")


def _cutout(client: ProductClient, args: argparse.Namespace) -> None:
    from ._manifest import write_atomic
    from .batch import cutout_png

    photo = _images.decode_photo(args.photo.read_bytes())
    rgba = client.cutout_rgba(photo)
    out = args.out or args.photo.with_name(f"{args.photo.stem}_cutout.png")
    write_atomic(out, cutout_png(rgba, client))
    if args.matte is not None:
        _images.save_png(np.repeat(rgba[..., 3:], 3, axis=2), args.matte)
    kept = float((rgba[..., 3] >= 128).mean())
    print(f"wrote {out} ({rgba.shape[1]}x{rgba.shape[0]} RGBA, {100 * kept:.0f}% of the photo kept)")


_EXT = {"jpeg": ".jpg", "png": ".png", "webp": ".webp"}


def _scene(client: ProductClient, args: argparse.Namespace) -> None:
    if args.photo is None and args.cls is None:
        raise InvalidInputError("give a product photo, or --class (and --seed) for a generated product")
    images = client.product_scene(
        args.photo,
        class_id=args.cls if args.photo is None else None,
        seed=args.seed,
        scene=args.scene,
        format=args.format,
        variants=args.variants,
        encoding=args.encoding,
    )
    out: Path = args.out
    if out.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp"):
        paths = (
            [out]
            if len(images) == 1
            else [out.with_name(f"{out.stem}-{k}{out.suffix}") for k in range(1, len(images) + 1)]
        )
    else:
        stem = args.photo.stem if args.photo is not None else _slug(str(args.cls)) + f"_seed{args.seed}"
        paths = [
            out / f"{stem}-{_slug(args.scene)}-{k}{_EXT[args.encoding]}" for k in range(1, len(images) + 1)
        ]
    for path, data in zip(paths, images, strict=True):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    print(f"wrote {len(paths)} image(s): {', '.join(str(p) for p in paths)}")


def _batch(args: argparse.Namespace) -> int:
    from .batch import AssetPlan, run_batch

    options = {
        "white_format": args.white_format,
        "scene_format": args.scene_format,
        "scene": args.scene,
        "encoding": args.encoding,
        "ad_encoding": args.ad_encoding,
    }
    try:
        plan = AssetPlan.parse(args.assets, **options)
    except ValueError as exc:
        raise InvalidInputError(f"--assets: {exc}") from None
    summary = run_batch(
        args.catalogue,
        args.out,
        args.url or ["localhost:8001"],
        plan,
        concurrency=args.concurrency,
        retries=args.retries,
        progress=args.progress,
        timeout_s=args.timeout or 120.0,
    )
    print(summary.report())
    if summary.interrupted:
        return 130
    return 1 if summary.failed else 2 if summary.bad_rows else 0


_COMMANDS = {
    "products": _products,
    "tryon": _tryon,
    "detail": _detail,
    "upscale": _upscale,
    "personalize": _personalize,
    "ads": _ads,
    "inventory": _inventory,
    "sheet": _sheet,
    "cutout": _cutout,
    "scene": _scene,
}


def main(argv: Sequence[str] | None = None) -> int:
    """Exit codes: 0 done; 1 an error (batch: some assets failed); 2 invalid input (batch: bad rows
    were skipped, everything else was made); 130 interrupted (batch: the manifest is consistent)."""
    args = build_parser().parse_args(argv)
    try:
        if args.command == "batch":
            return _batch(args)
        urls = args.url or ["localhost:8001"]
        with ProductClient(urls, timeout_s=args.timeout or 30.0, retries=args.retries) as client:
            if args.command in _COMMANDS:
                _COMMANDS[args.command](client, args)
            else:
                _classes(client)
    except InvalidInputError as exc:
        print(f"ecomgen-client: invalid input: {exc}", file=sys.stderr)
        return 2
    except (EcomgenError, ImportError, OSError, ValueError) as exc:
        print(f"ecomgen-client: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
