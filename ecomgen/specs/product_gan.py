"""product_gan: (class_id, seed) -> a 64x48 product photo of that article type."""

from __future__ import annotations

from ecomgen.models import product_gan as model
from ecomgen.spec import (
    Batching,
    NetworkSpec,
    NetworkStep,
    OptimizationProfile,
    PythonStep,
    QueuePolicy,
    ServedModel,
)
from ecomgen.specs.common import HANDLERS, TO_UINT8
from ecomgen_client import contracts
from ecomgen_client.contracts import PRODUCT_CLASSES, PRODUCT_IMAGE_HW, TensorSpec

LATENT_DIM = model.LATENT_DIM
# A bounded queue: 128 requests of up to 64 rows wait at most; overload is rejected, and the
# memory they hold stays bounded (benchmarks/results: soak).
QUEUE = QueuePolicy(max_queue_size=128, default_timeout_us=5_000_000)

GENERATOR = NetworkSpec(
    name=model.GENERATOR,
    inputs=(
        TensorSpec("z", "FP32", (LATENT_DIM,)),
        # One-hot rather than an index: TensorRT has mis-served batched Gather/Embedding.
        TensorSpec("class_onehot", "FP32", (len(PRODUCT_CLASSES),), value_range=(0.0, 1.0), kind="onehot"),
    ),
    outputs=(TensorSpec("image", "FP32", (3, *PRODUCT_IMAGE_HW), kind="image"),),
    max_batch_size=64,
    profile=OptimizationProfile(min_batch=1, opt_batch=32, max_batch=64),
    # As its own step (product_detail, ad_creative; every model on the gpu target), a short wait:
    # alone in an ensemble, a batched step waits its whole delay; with 2 ms here and on the pre
    # step, product_detail's latency was 1.30x the sum of its steps' compute (benchmarks/results,
    # 2026-12-02 product_detail). Under load the queue behind a busy instance batches anyway.
    batching=Batching(preferred_batch_sizes=(16, 32, 64), max_queue_delay_us=500),
    queue=QUEUE,
    gpu_instances=2,
)

# From the hot-path variants on this 2-core Xeon (benchmarks/results/2026-12-02-*-product_gan-
# hotpath-variants.md, perf_analyzer, single-row requests): with one instance, any queue policy
# (this bounded queue) gave p99 ~0.55 s and a third of the throughput at c=32; a second instance
# (2 x 2 threads) removes that and keeps the bounded queue, and no queue delay halves c=1
# latency. (An earlier tune on a Zen 5 host, results/2026-11-26-amd-epyc-2c-tune.md, had picked
# 1 x 2 threads with 2 ms, without a queue policy.)
BATCHING = Batching(preferred_batch_sizes=(64,), max_queue_delay_us=0)

# Shared by product_gan and product_detail, so it declares its own batching.
PRE = PythonStep(
    name="product_gan_pre",
    handler=f"{HANDLERS}.product_gan:Preprocess",
    inputs=contracts.PRODUCT_GAN.inputs,
    outputs=GENERATOR.inputs,
    params=(("num_classes", str(len(PRODUCT_CLASSES))), ("latent_dim", str(LATENT_DIM))),
    max_batch_size=contracts.PRODUCT_GAN.max_batch_size,
    # Cheap and first: pass requests on at once, the generator's queue does the batching.
    batching=Batching(preferred_batch_sizes=(64,), max_queue_delay_us=0),
)
POST = PythonStep(
    name="product_gan_post",
    handler=TO_UINT8,
    inputs=GENERATOR.outputs,
    outputs=contracts.PRODUCT_GAN.outputs,
)

PRODUCT_GAN = ServedModel(
    contract=contracts.PRODUCT_GAN,
    steps=(PRE, NetworkStep(GENERATOR), POST),
    batching=BATCHING,
    queue=QUEUE,
    module="ecomgen.models.product_gan",
    fused_cpu_instances=2,
    cpu_threads=2,
    # Chosen per host by measurement (ecomgen.serving.calibrate): OpenVINO bf16 won on a Zen 5
    # with avx512_bf16 (+71%), fp32 on a Xeon without AMX (bf16 slower there).
    cpu_runtime="auto",
    # One Python model on CPU hosts: pre, generator and post in one pass, one queue.
    fuse_on_cpu=True,
    deadline_us=5_000_000,
    training="training.product_gan",
    checkpoints=("product_gan.safetensors", "product_gan.json"),
)
