"""Try-on preprocessing shared by the Triton models, training and the PyTorch reference.

numpy + Pillow only. Copied next to each try-on ``model.py`` by ``export/repository.py``;
training imports it too, so the networks train on exactly what the server feeds them.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

try:
    from ecomgen_common import RequestError
except ModuleNotFoundError:  # imported from the project (training, tests), not from a repository copy
    from export.triton_python.ecomgen_common import RequestError

HEIGHT, WIDTH = 256, 192
MIN_SIDE, MAX_SIDE = 64, 2048
MAX_ENCODED_BYTES = 16 << 20
# VITON photos sit on a near-white studio background; padding uses the same colour.
BACKGROUND = 255
# A garment pixel differs from white by more than this in some channel.
GARMENT_THRESHOLD = 24


def check_image(name: str, image: np.ndarray) -> None:
    """One request's image: HxWx3 uint8 with each side in [MIN_SIDE, MAX_SIDE]."""
    if image.ndim != 3:
        raise RequestError(f"input '{name}' has shape {list(image.shape)}, expected [height, width, 3]")
    h, w, c = image.shape
    if h == 0 or w == 0:
        raise RequestError(f"input '{name}' is an empty image ({h}x{w})")
    if c != 3:
        raise RequestError(f"input '{name}' has {c} channels, expected 3 (RGB)")
    if image.dtype != np.uint8:
        raise RequestError(f"input '{name}' has dtype {image.dtype}, expected uint8")
    if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
        raise RequestError(f"input '{name}' is {h}x{w} pixels; each side must be in [{MIN_SIDE}, {MAX_SIDE}]")


def fit(image: np.ndarray, height: int = HEIGHT, width: int = WIDTH) -> np.ndarray:
    """Resize keeping the aspect ratio, then pad with the background colour to height x width."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return np.ascontiguousarray(image)
    scale = min(height / h, width / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    resized = np.asarray(Image.fromarray(image).resize((nw, nh), Image.Resampling.BILINEAR))
    out = np.full((height, width, 3), BACKGROUND, dtype=np.uint8)
    top, left = (height - nh) // 2, (width - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def garment_mask(garment: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 catalogue photo -> HxW float32 {0, 1}: the pixels that are not background.

    A threshold on the distance from white, then the holes inside each row and column
    span are filled (a white logo on a dark shirt is still shirt).
    """
    fg = (BACKGROUND - garment.astype(np.int16)).max(axis=2) > GARMENT_THRESHOLD
    rows = _fill_spans(fg)
    cols = _fill_spans(fg.T).T
    return (fg | (rows & cols)).astype(np.float32)


def _fill_spans(mask: np.ndarray) -> np.ndarray:
    """True between the first and last True of each row."""
    any_ = mask.any(axis=1)
    first = np.where(any_, mask.argmax(axis=1), mask.shape[1])
    last = np.where(any_, mask.shape[1] - 1 - mask[:, ::-1].argmax(axis=1), -1)
    idx = np.arange(mask.shape[1])[None, :]
    return (idx >= first[:, None]) & (idx <= last[:, None])


def to_network(image: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 in [-1, 1]."""
    return (image.astype(np.float32).transpose(2, 0, 1) / 127.5) - 1.0


def preprocess(person: np.ndarray, garment: np.ndarray) -> dict[str, np.ndarray]:
    """One pair of uint8 images (any valid size) -> the parser/warp inputs, unbatched."""
    check_image("person", person)
    check_image("garment", garment)
    p, g = fit(person), fit(garment)
    return {
        "person": to_network(p),
        "garment": to_network(g),
        "garment_mask": garment_mask(g)[None],
    }


def decode(name: str, data: bytes) -> np.ndarray:
    """Encoded JPEG/PNG/WebP bytes -> HxWx3 uint8 RGB, or a RequestError naming the problem."""
    if len(data) == 0:
        raise RequestError(f"input '{name}' is empty (0 bytes)")
    if len(data) > MAX_ENCODED_BYTES:
        raise RequestError(f"input '{name}' is {len(data)} bytes; the limit is {MAX_ENCODED_BYTES}")
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            # Checked before decoding, so a tiny file claiming 60000x60000 never allocates.
            if not (MIN_SIDE <= h <= MAX_SIDE and MIN_SIDE <= w <= MAX_SIDE):
                raise RequestError(
                    f"input '{name}' is {h}x{w} pixels; each side must be in [{MIN_SIDE}, {MAX_SIDE}]"
                )
            return np.asarray(im.convert("RGB"))
    except RequestError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as e:
        raise RequestError(f"input '{name}' is not a decodable JPEG/PNG image ({type(e).__name__})") from e


def encode_png(image: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()
