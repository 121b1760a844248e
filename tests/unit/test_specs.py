from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from ecomgen_client.specs import (
    PRODUCT_GAN,
    SPECS,
    DynamicBatching,
    NetworkSpec,
    OptimizationProfile,
    QueuePolicy,
    TensorSpec,
)


@pytest.mark.parametrize("spec", SPECS.values(), ids=lambda s: s.name)
def test_spec_invariants(spec):
    net = spec.network
    assert net.profile.max_batch == net.max_batch_size
    assert spec.max_batch_size >= 64
    assert max(spec.batching.preferred_batch_sizes) <= spec.max_batch_size
    assert spec.queue.max_queue_size > 0 and spec.queue.default_timeout_us > 0
    for t in (*spec.inputs, *spec.outputs, *net.inputs, *net.outputs):
        assert t.numpy_dtype is not None


def test_product_gan_public_contract():
    assert PRODUCT_GAN.name == "product_gan"
    assert PRODUCT_GAN.input("class_id") == TensorSpec("class_id", "INT32", (1,), value_range=(0, 9))
    assert PRODUCT_GAN.input("seed").dtype == "INT64" and PRODUCT_GAN.input("seed").dims == (1,)
    image = PRODUCT_GAN.output("image")
    assert (image.dtype, image.dims) == ("UINT8", (64, 48, 3))
    assert len(PRODUCT_GAN.class_names) == 10


def test_specs_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PRODUCT_GAN.max_batch_size = 1  # type: ignore[misc]


def test_profile_shapes_follow_the_tensor_spec():
    z = PRODUCT_GAN.network.input("z")
    lo, opt, hi = PRODUCT_GAN.network.profile.shapes(z)
    assert lo == (1, 128) and opt == (32, 128) and hi == (64, 128)


def test_profile_must_match_max_batch_size():
    with pytest.raises(ValueError, match="profile max batch"):
        dataclasses.replace(PRODUCT_GAN.network, max_batch_size=32)


def test_bad_profile_and_dtype_are_rejected():
    with pytest.raises(ValueError):
        OptimizationProfile(min_batch=4, opt_batch=2, max_batch=8)
    with pytest.raises(ValueError, match="unknown Triton dtype"):
        TensorSpec("x", "FLOAT", (1,))
    with pytest.raises(ValueError, match="only the batch axis"):
        OptimizationProfile(1, 1, 1).shapes(TensorSpec("x", "UINT8", (-1, 3)))


def test_preferred_batch_above_max_is_rejected():
    with pytest.raises(ValueError, match="preferred batch size"):
        dataclasses.replace(PRODUCT_GAN, batching=DynamicBatching((128,), 100))


@pytest.mark.parametrize(("given", "expected"), [("Dresses", 4), ("casual shoes", 5), (9, 9), ("3", 3)])
def test_class_id_resolution(given, expected):
    assert PRODUCT_GAN.class_id(given) == expected


@pytest.mark.parametrize("bad", ["Socks", 10, -1])
def test_class_id_resolution_rejects(bad):
    with pytest.raises(ValueError):
        PRODUCT_GAN.class_id(bad)


def test_network_spec_lookup_errors_name_the_tensor():
    net = NetworkSpec(
        "n",
        (TensorSpec("a", "FP32", (2,)),),
        (TensorSpec("b", "FP32", (2,)),),
        8,
        OptimizationProfile(1, 4, 8),
        DynamicBatching((8,), 0),
        QueuePolicy(8, 1000),
    )
    assert net.input("a").numpy_dtype == np.float32
    with pytest.raises(KeyError, match="'c'"):
        net.output("c")
