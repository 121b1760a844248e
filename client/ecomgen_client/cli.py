"""``ecomgen-client`` command line: generate product images, list classes."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _images
from .client import ProductClient
from .errors import EcomgenError, InvalidInputError
from .specs import PRODUCT_GAN

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


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default="localhost:8001", help="Triton gRPC host:port (default %(default)s)")
    common.add_argument(
        "--timeout", type=float, default=30.0, help="seconds per request (default %(default)s)"
    )
    common.add_argument(
        "--retries", type=int, default=3, help="retries while UNAVAILABLE (default %(default)s)"
    )

    parser = argparse.ArgumentParser(
        prog="ecomgen-client", description="Generate ecomgen product images through Triton (gRPC)."
    )
    sub = parser.add_subparsers(dest="command", required=True)

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
    return parser


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def _products(client: ProductClient, args: argparse.Namespace) -> None:
    seeds: list[int] = args.seeds
    if args.cls == "all":
        rows = [client.generate_products(i, seeds) for i in range(len(client.spec.class_names))]
        grid = _images.make_grid(np.concatenate(rows), cols=len(seeds))
        path = _images.save_png(grid, args.out)
        print(f"wrote {path} ({len(rows)} classes x {len(seeds)} seeds, one row per class)")
        return
    images = client.generate_products(args.cls, seeds)
    if args.each:
        # Valid here: generate_products already resolved the class.
        slug = _slug(client.spec.class_names[client.spec.class_id(args.cls)])
        for seed, image in zip(seeds, images, strict=True):
            _images.save_png(image, args.out / f"{slug}_seed{seed}.png")
        print(f"wrote {len(images)} images to {args.out}/")
    else:
        path = _images.save_png(_images.make_grid(images, cols=args.cols), args.out)
        print(f"wrote {path} ({len(images)} images)")


def _classes(client: ProductClient) -> None:
    for i, name in enumerate(client.class_names()):
        print(f"{i}\t{name}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        with ProductClient(args.url, timeout_s=args.timeout, retries=args.retries) as client:
            if args.command == "products":
                _products(client, args)
            else:
                _classes(client)
    except InvalidInputError as exc:
        print(f"ecomgen-client: invalid input: {exc}", file=sys.stderr)
        return 2
    except (EcomgenError, ImportError, OSError, ValueError) as exc:
        print(f"ecomgen-client: error: {exc}", file=sys.stderr)
        return 1
    return 0
