"""product_cutout and product_scene: the product studio, from a shop's own photo.

``product_cutout`` is an ensemble (resize -> the matting network -> edges refined at full size);
``product_scene`` is one Python step that runs the networks its request needs (the matting
network for an upload; the generator and x4 network for a generated product; x4 again only when
the product must be enlarged more than twice) and composes the images.
"""

from __future__ import annotations

import json

from ecomgen.creative.studio import SCENE_NAMES
from ecomgen.models import cutout as model
from ecomgen.spec import Batching, NetworkStep, PythonStep, QueuePolicy, ServedModel
from ecomgen.specs.common import HANDLERS, network
from ecomgen.specs.product_gan import GENERATOR, LATENT_DIM
from ecomgen.specs.upscale import SR_NETWORK
from ecomgen_client import contracts
from ecomgen_client.contracts import PRODUCT_CLASSES, TensorSpec

H = f"{HANDLERS}.studio"
MATTING_HW = model.INPUT_HW
RESIZED = TensorSpec("resized", "FP32", (3, *MATTING_HW), kind="image")
MATTE = TensorSpec("matte", "FP32", (1, *MATTING_HW), kind="mask")
# No queue delay (every step of a chain would pay it); under load a step batches what queued.
BATCHING = Batching(preferred_batch_sizes=(4, 8), max_queue_delay_us=0)
QUEUE = QueuePolicy(max_queue_size=64, default_timeout_us=10_000_000)
MATTING = network(
    model.NETWORK, (RESIZED,), (MATTE,), max_batch=8, opt_batch=4, batching=BATCHING, queue=QUEUE
)
MATTING_PARAMS = (
    ("matting", MATTING.name),
    ("matting_hw", json.dumps(list(MATTING_HW))),
    ("matting_io", json.dumps([RESIZED.name, MATTE.name])),
)
# What a step needs to make products itself (ads, stock images, scenes): see handlers/products.py.
PRODUCT_PARAMS = (
    *MATTING_PARAMS,
    ("generator", GENERATOR.name),
    ("upscaler", SR_NETWORK.name),
    ("latent_dim", str(LATENT_DIM)),
    ("num_classes", str(len(PRODUCT_CLASSES))),
)
PRODUCT_CALLS = (MATTING, GENERATOR, SR_NETWORK)
PRODUCT_MODULES = ("ecomgen.models.cutout", "ecomgen.models.product_gan", "ecomgen.models.sr")
PRODUCT_CHECKPOINTS = (
    "product_cutout.safetensors",
    "product_cutout.json",
    "product_gan.safetensors",
    "product_gan.json",
    "sr.safetensors",
    "sr.json",
)

C = contracts.PRODUCT_CUTOUT
PHOTO = C.input("image")
PRODUCT_CUTOUT = ServedModel(
    contract=C,
    steps=(
        PythonStep("product_cutout_pre", f"{H}:CutoutPre", (PHOTO,), (RESIZED,), MATTING_PARAMS),
        NetworkStep(MATTING),
        PythonStep("product_cutout_post", f"{H}:CutoutPost", (MATTE, PHOTO), C.outputs),
    ),
    batching=BATCHING,
    queue=QUEUE,
    module=model.__name__,
    training="training.cutout",
    checkpoints=PRODUCT_CHECKPOINTS[:2],
)

S = contracts.PRODUCT_SCENE
PRODUCT_SCENE = ServedModel(
    contract=S,
    steps=(
        PythonStep(
            "product_scene",
            f"{H}:Scene",
            S.inputs,
            S.outputs,
            (*PRODUCT_PARAMS, ("formats", json.dumps(contracts.STUDIO_FORMATS))),
            max_batch_size=0,
            calls=PRODUCT_CALLS,
        ),
    ),
    batching=Batching(preferred_batch_sizes=(), max_queue_delay_us=0),
    queue=QueuePolicy(max_queue_size=16, default_timeout_us=20_000_000),
    module=PRODUCT_MODULES,
    cpu_instances=2,
    deadline_us=20_000_000,
    # Composition and encoding at 2000 px take tens of milliseconds a variant: a short bound.
    max_inflight_requests=16,
    # The scene library's names, for clients (`ecomgen-client scene --scene NAME`).
    extra_parameters=(("scenes", json.dumps(["white", "auto", *SCENE_NAMES])),),
    training="training.cutout + training.product_gan + training.sr",
    checkpoints=PRODUCT_CHECKPOINTS,
)
