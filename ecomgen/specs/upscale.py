"""upscale and product_detail: the x4 super-resolution network, alone and after product_gan.

The SR network takes any size (16-512 px a side); Triton's dynamic batcher only groups
requests of the same size, which is what a batch of thumbnails is. ``product_detail``
chains product_gan's own steps and network with it, so a (class, seed) pair gives
product_gan's image, upscaled.
"""

from __future__ import annotations

from ecomgen.models import sr as model
from ecomgen.spec import Batching, NetworkSpec, NetworkStep, OptimizationProfile, PythonStep, ServedModel
from ecomgen.specs.common import FROM_UINT8, TEN_SECOND_QUEUE, TO_UINT8
from ecomgen.specs.product_gan import GENERATOR, PRODUCT_GAN
from ecomgen.specs.product_gan import PRE as PRODUCT_GAN_PRE
from ecomgen_client import contracts
from ecomgen_client.contracts import SR_MAX_SIDE, SR_MIN_SIDE, SR_SCALE, TensorSpec

LOWRES = TensorSpec(
    "lowres",
    "FP32",
    (3, -1, -1),
    min_dims=(3, SR_MIN_SIDE, SR_MIN_SIDE),
    max_dims=(3, SR_MAX_SIDE, SR_MAX_SIDE),
    kind="image",
)
HIGHRES = TensorSpec(
    "highres", "FP32", (3, -1, -1), max_dims=(3, SR_SCALE * SR_MAX_SIDE, SR_SCALE * SR_MAX_SIDE), kind="image"
)
# No queue delay: in a chain of steps every delay is paid again (an ensemble ran 1.44x its steps
# with 1 ms a step); under load a step batches whatever queued during the previous execution.
BATCHING = Batching(preferred_batch_sizes=(8, 16), max_queue_delay_us=0)

SR_NETWORK = NetworkSpec(
    name=model.STEP,
    inputs=(LOWRES,),
    outputs=(HIGHRES,),
    max_batch_size=16,
    # The opt shape is a product_gan thumbnail; engines accept 16..512 px a side.
    profile=OptimizationProfile(
        min_batch=1,
        opt_batch=8,
        max_batch=16,
        dims=(("lowres", ((16, 64, SR_MAX_SIDE), (16, 48, SR_MAX_SIDE))),),
    ),
    batching=BATCHING,
    queue=TEN_SECOND_QUEUE,
    gpu_instances=1,
)
MODULE = "ecomgen.models.sr"
CHECKPOINTS = ("sr.safetensors", "sr.json")

UPSCALE = ServedModel(
    contract=contracts.UPSCALE,
    steps=(
        PythonStep(
            "upscale_pre",
            FROM_UINT8,
            contracts.UPSCALE.inputs,
            (LOWRES,),
            params=(("source.lowres", "image"),),
        ),
        NetworkStep(SR_NETWORK),
        PythonStep(
            "upscale_post",
            TO_UINT8,
            (HIGHRES,),
            contracts.UPSCALE.outputs,
            params=(("source.upscaled", "highres"),),
        ),
    ),
    batching=BATCHING,
    queue=TEN_SECOND_QUEUE,
    module=MODULE,
    training="training.sr",
    checkpoints=CHECKPOINTS,
)

DETAIL_IMAGE = TensorSpec("highres", "FP32", (3, *contracts.DETAIL_HW), kind="image")

PRODUCT_DETAIL = ServedModel(
    contract=contracts.PRODUCT_DETAIL,
    steps=(
        PRODUCT_GAN_PRE,
        NetworkStep(GENERATOR),
        NetworkStep(SR_NETWORK, bind=(("lowres", "image"),)),  # the generator's image is SR's lowres
        PythonStep(
            "product_detail_post",
            TO_UINT8,
            (DETAIL_IMAGE,),
            contracts.PRODUCT_DETAIL.outputs,
            params=(("source.image", "highres"),),
        ),
    ),
    batching=Batching(preferred_batch_sizes=(16,), max_queue_delay_us=0),
    queue=PRODUCT_GAN.queue,  # shares product_gan_pre; its later steps have their own timeouts
    # Two networks from two model modules: the generator's and SR's.
    module=("ecomgen.models.product_gan", MODULE),
    deadline_us=PRODUCT_GAN.deadline_us,
    training="training.sr",
    checkpoints=(*PRODUCT_GAN.checkpoints, *CHECKPOINTS),
)
