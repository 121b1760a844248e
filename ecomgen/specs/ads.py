"""ad_creative, inventory_image and inventory_sheet: products laid out for publishing.

Each chains product_gan's generator (and, for the single-product models, the x4 close-up
network) with a layout step that encodes labelled images. One request is one ad set, SKU
or sheet; the networks batch across requests.
"""

from __future__ import annotations

from ecomgen.spec import Batching, NetworkStep, PythonStep, QueuePolicy, ServedModel, Step
from ecomgen.specs.common import HANDLERS, rows
from ecomgen.specs.product_gan import GENERATOR, LATENT_DIM
from ecomgen.specs.upscale import SR_NETWORK
from ecomgen_client import contracts
from ecomgen_client.contracts import MAX_SKUS, MAX_VARIANTS, PRODUCT_CLASSES, Contract, TensorSpec

H = f"{HANDLERS}.ads"
PARAMS = (("latent_dim", str(LATENT_DIM)), ("num_classes", str(len(PRODUCT_CLASSES))))
# Layout and encoding of 1080-px creatives take tens of milliseconds each: a short queue keeps
# overload from piling up images that would be late anyway.
QUEUE = QueuePolicy(max_queue_size=32, default_timeout_us=20_000_000)
BATCHING = Batching(preferred_batch_sizes=(), max_queue_delay_us=0)
CHECKPOINTS = ("product_gan.safetensors", "product_gan.json", "sr.safetensors", "sr.json")
MODULES = ("ecomgen.models.product_gan", "ecomgen.models.sr")


def _served(
    contract: Contract, pre: str, compose: str, outputs_from: TensorSpec, n: int, with_sr: bool
) -> ServedModel:
    z, onehot = (rows(t, n) for t in GENERATOR.inputs)
    steps: list[Step] = [
        PythonStep(
            f"{contract.name}_pre", f"{H}:{pre}", contract.inputs, (z, onehot), PARAMS, max_batch_size=0
        ),
        NetworkStep(GENERATOR),
    ]
    if with_sr:
        steps.append(NetworkStep(SR_NETWORK, bind=(("lowres", "image"),)))
    steps.append(
        PythonStep(
            f"{contract.name}_compose",
            f"{H}:{compose}",
            (*contract.inputs, rows(outputs_from, n)),
            contract.outputs,
            max_batch_size=0,
        )
    )
    return ServedModel(
        contract=contract,
        steps=tuple(steps),
        batching=BATCHING,
        queue=QUEUE,
        module=MODULES if with_sr else MODULES[0],
        deadline_us=20_000_000,
        training="training.product_gan + training.sr",
        checkpoints=CHECKPOINTS if with_sr else CHECKPOINTS[:2],
    )


CLOSEUP = TensorSpec("highres", "FP32", (3, *contracts.DETAIL_HW), kind="image")
THUMBNAIL = GENERATOR.outputs[0]

AD_CREATIVE = _served(contracts.AD_CREATIVE, "AdPre", "AdCompose", CLOSEUP, MAX_VARIANTS, with_sr=True)
INVENTORY_IMAGE = _served(
    contracts.INVENTORY_IMAGE, "InventoryPre", "InventoryCompose", CLOSEUP, 1, with_sr=True
)
# Up to 64 SKUs: their 64x48 thumbnails go straight into the sheet's small cells (the x4 network
# takes at most 16 rows a batch).
INVENTORY_SHEET = _served(
    contracts.INVENTORY_SHEET, "SheetPre", "SheetCompose", THUMBNAIL, MAX_SKUS, with_sr=False
)
