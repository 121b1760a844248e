"""The registry of served models: one line per model.

The repository builder, export, the TensorRT builder, the CLI, the benchmarks and the
tests read this list instead of naming models. Adding a model is a spec module under
``ecomgen/specs/``, a model module under ``ecomgen/models/`` and one line below (see the
README, "Adding a model").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ecomgen.spec import NetworkSpec, ServedModel, step_index
from ecomgen.specs import ads, personalize, product_gan, studio, tryon, upscale


class Registry:
    """An ordered set of served models with unique names and consistent shared steps."""

    def __init__(self, models: Iterable[ServedModel] = ()) -> None:
        self._models: dict[str, ServedModel] = {}
        for m in models:
            self.register(m)

    def register(self, model: ServedModel) -> ServedModel:
        if model.name in self._models:
            raise ValueError(f"model {model.name!r} is already registered")
        step_index([*self._models.values(), model])  # shared steps must agree
        self._models[model.name] = model
        return model

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def __contains__(self, name: object) -> bool:
        return name in self._models

    def __getitem__(self, name: str) -> ServedModel:
        try:
            return self._models[name]
        except KeyError:
            raise KeyError(f"unknown model {name!r}; registered: {sorted(self._models)}") from None

    def names(self) -> list[str]:
        return list(self._models)

    def networks(self) -> dict[str, tuple[ServedModel, NetworkSpec]]:
        """Every network of every model, by name, with the first model that declares it."""
        out: dict[str, tuple[ServedModel, NetworkSpec]] = {}
        for m in self:
            for net in m.networks:
                out.setdefault(net.name, (m, net))
        return out


REGISTRY = Registry()
REGISTRY.register(product_gan.PRODUCT_GAN)
REGISTRY.register(tryon.TRYON)
REGISTRY.register(tryon.TRYON_BYTES)
REGISTRY.register(upscale.UPSCALE)
REGISTRY.register(upscale.PRODUCT_DETAIL)
REGISTRY.register(personalize.PERSONALIZE)
REGISTRY.register(ads.AD_CREATIVE)
REGISTRY.register(ads.INVENTORY_IMAGE)
REGISTRY.register(ads.INVENTORY_SHEET)
REGISTRY.register(studio.PRODUCT_CUTOUT)
REGISTRY.register(studio.PRODUCT_SCENE)
