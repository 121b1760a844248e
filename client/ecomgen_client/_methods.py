"""The typed convenience methods, written once for both clients.

``ProductClient._run`` returns the result; ``AsyncProductClient._run`` returns an
awaitable of it, so on the async client every method below is awaited.
"""

from __future__ import annotations

from typing import Any

from . import _images, ops
from ._common import Call
from .contracts import PRODUCT_GAN, Contract


class TypedMethods:
    products_model: Contract = PRODUCT_GAN

    def _run(self, call: Call[Any], *, timeout_s: float | None = None) -> Any:
        raise NotImplementedError

    def generate_products(self, cls: int | str, seeds: ops.Seeds, *, timeout_s: float | None = None) -> Any:
        """One image per seed of class ``cls`` (name, case-insensitive, or id): uint8 [N, 64, 48, 3]."""
        return self._run(ops.products(cls, seeds, self.products_model), timeout_s=timeout_s)

    def generate_products_pil(
        self, cls: int | str, seeds: ops.Seeds, *, timeout_s: float | None = None
    ) -> Any:
        """Like :meth:`generate_products` but a list of PIL images (needs Pillow)."""
        call = ops.products(cls, seeds, self.products_model)
        return self._run(
            Call(call.model, call.inputs, lambda out: _images.to_pil(out["image"])), timeout_s=timeout_s
        )

    def try_on(self, person: ops.ImageLike, garment: ops.ImageLike, *, timeout_s: float | None = None) -> Any:
        """``person`` wearing ``garment`` (``tryon``, 256x192). PIL or [H, W, 3] uint8 in, 64 to 2048 px
        a side; returns the same kind: a PIL image or a uint8 [256, 192, 3] array."""
        return self._run(ops.try_on(person, garment), timeout_s=timeout_s)

    def try_on_debug(
        self, person: ops.ImageLike, garment: ops.ImageLike, *, timeout_s: float | None = None
    ) -> Any:
        """The try-on plus the warped garment and the composition mask (:class:`ops.TryOnResult`)."""
        return self._run(ops.try_on_debug(person, garment), timeout_s=timeout_s)

    def upscale(self, image: ops.ImageLike, *, timeout_s: float | None = None) -> Any:
        """x4 close-up of an image (PIL or uint8 [H, W, 3], 16-512 px a side; or [N, H, W, 3] of one
        size): the same kind back, 4x each side."""
        return self._run(ops.upscale(image), timeout_s=timeout_s)

    def product_detail(self, cls: int | str, seeds: ops.Seeds, *, timeout_s: float | None = None) -> Any:
        """256x192 close-ups: product_gan's image for each seed, upscaled x4 (uint8 [N, 256, 192, 3])."""
        return self._run(ops.product_detail(cls, seeds), timeout_s=timeout_s)

    def personalize(
        self,
        history: Any,
        count: int,
        seed: int,
        weights: Any = None,
        *,
        timeout_s: float | None = None,
    ) -> Any:
        """``count`` new images in the style of a shopper's browsed photos (:class:`ops.Personalized`)."""
        return self._run(ops.personalize(history, count, seed, weights), timeout_s=timeout_s)

    def ad_creatives(
        self, title: str, price: str, currency: str, *, timeout_s: float | None = None, **kw: Any
    ) -> Any:
        """Encoded ad creatives (a list of bytes); keywords as :func:`ops.ad_creatives`."""
        return self._run(ops.ad_creatives(title, price, currency, **kw), timeout_s=timeout_s)

    def inventory_image(self, stock: int, *, timeout_s: float | None = None, **kw: Any) -> Any:
        """The encoded product image with its stock state; keywords as :func:`ops.inventory_image`."""
        return self._run(ops.inventory_image(stock, **kw), timeout_s=timeout_s)

    def inventory_sheet(self, items: Any, *, timeout_s: float | None = None, **kw: Any) -> Any:
        """One encoded contact sheet of up to 64 :class:`ops.SheetItem`."""
        return self._run(ops.inventory_sheet(items, **kw), timeout_s=timeout_s)

    def cutout(self, image: Any, *, timeout_s: float | None = None) -> Any:
        """The product's alpha matte (``product_cutout``), 0 background to 255 product, at the photo's
        size: PIL in -> PIL "L" out; [H, W, 3] uint8 -> [H, W]; [N, H, W, 3] (one size) -> [N, H, W];
        a list of same-size photos -> a list. Photos over 2048 px a side are shrunk for the model and
        the matte enlarged back (needs Pillow)."""
        return self._run(ops.cutout(image), timeout_s=timeout_s)

    def cutout_rgba(self, image: Any, *, timeout_s: float | None = None) -> Any:
        """The photo with its matte as alpha: PIL "RGBA", or [H, W, 4] / [N, H, W, 4] uint8 arrays."""
        return self._run(ops.cutout(image, rgba=True), timeout_s=timeout_s)

    def product_scene(
        self,
        product: ops.PhotoLike | None = None,
        *,
        class_id: int | str | None = None,
        seed: int = 0,
        scene: str = "white",
        format: str = "2000x2000",
        variants: int = 1,
        encoding: str = "png",
        timeout_s: float | None = None,
    ) -> Any:
        """``variants`` encoded, labelled images of a product (a photo: path, bytes, PIL or array; or
        ``class_id`` + ``seed``) in ``scene`` ("white", "auto" or a library name): list of bytes."""
        call = ops.product_scene(
            product,
            class_id=class_id,
            seed=seed,
            scene=scene,
            format=format,
            variants=variants,
            encoding=encoding,
        )
        return self._run(call, timeout_s=timeout_s)

    def white_main_image(
        self,
        product: ops.PhotoLike | None = None,
        *,
        class_id: int | str | None = None,
        seed: int = 0,
        format: str = "2000x2000",
        encoding: str = "png",
        timeout_s: float | None = None,
    ) -> Any:
        """The marketplace main image (``product_scene`` with scene "white"): one encoded image, bytes."""
        call = ops.white_main_image(product, class_id=class_id, seed=seed, format=format, encoding=encoding)
        return self._run(call, timeout_s=timeout_s)
