"""Image helpers; Pillow is imported only here and only when PIL output is asked for."""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from PIL import Image


def _pil_image_module() -> Any:
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError(
            "Pillow is needed for PIL images and PNG files: pip install 'ecomgen-client[images]'"
        ) from exc
    return Image


def to_pil(images: npt.NDArray[np.uint8]) -> list[Image.Image]:
    """[N, H, W, 3] uint8 -> N RGB images."""
    image_mod = _pil_image_module()
    return [image_mod.fromarray(np.ascontiguousarray(img)) for img in images]


def make_grid(
    images: npt.NDArray[np.uint8], cols: int | None = None, pad: int = 2, fill: int = 255
) -> npt.NDArray[np.uint8]:
    """Tile [N, H, W, C] images row-major into one [rows*(H+pad)+pad, cols*(W+pad)+pad, C] image."""
    if images.ndim != 4 or images.shape[0] == 0:
        raise ValueError(f"expected a non-empty [N, H, W, C] batch, got shape {list(images.shape)}")
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    if cols <= 0:
        raise ValueError(f"cols must be > 0, got {cols}")
    cols = min(cols, n)
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), fill, dtype=images.dtype)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        grid[y : y + h, x : x + w] = img
    return grid


def save_png(image: npt.NDArray[np.uint8], path: str | Path) -> Path:
    """Write one [H, W, 3] uint8 image as PNG, creating parent directories."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _pil_image_module().fromarray(np.ascontiguousarray(image)).save(path, format="PNG")
    return path


def load_rgb(path: str | Path) -> npt.NDArray[np.uint8]:
    """Read an image file as [H, W, 3] uint8 RGB."""
    with _pil_image_module().open(path) as im:
        return np.asarray(im.convert("RGB"))


def fit(image: npt.NDArray[np.uint8], height: int, width: int, fill: int = 255) -> npt.NDArray[np.uint8]:
    """Scale into height x width keeping the aspect ratio, padded with ``fill`` (needs Pillow)."""
    pil = _pil_image_module().fromarray(np.ascontiguousarray(image))
    pil.thumbnail((width, height))
    out = np.full((height, width, 3), fill, dtype=np.uint8)
    arr = np.asarray(pil.convert("RGB"))
    top, left = (height - arr.shape[0]) // 2, (width - arr.shape[1]) // 2
    out[top : top + arr.shape[0], left : left + arr.shape[1]] = arr
    return out
