"""All the steps of a served model in one Python model (the cpu target's ``fuse_on_cpu``).

On a CPU host every step runs in the same processes anyway; fusing them means a batch
crosses the Python stub's shared memory once instead of once per step, and waits in
one queue under one deadline. The ``pipeline`` parameter lists the steps with their
tensor wiring, exactly as the ensemble would run them on the gpu target.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ecomgen.serving.handlers.network import network_runner
from ecomgen.serving.runners import Runner
from ecomgen.serving.step import Step, StepConfig, TensorInfo


class _Stage:
    def __init__(self, entry: dict[str, Any], compute: Any) -> None:
        self.name = entry["name"]
        self.input_map: dict[str, str] = entry["input_map"]
        self.output_map: dict[str, str] = entry["output_map"]
        self.compute = compute


class FusedPipeline(Step):
    def setup(self) -> None:
        from ecomgen.serving.triton_backend import load_handler

        self.stages: list[_Stage] = []
        self.first: Step | None = None
        for entry in json.loads(self.params["pipeline"]):
            if entry["kind"] == "network":
                runner: Runner = network_runner(self, entry["network"])
                self.stages.append(_Stage(entry, _network_compute(runner)))
                continue
            config = StepConfig(
                name=entry["name"],
                max_batch_size=self.config.max_batch_size,
                inputs={t["name"]: TensorInfo.from_config(t, entry["params"]) for t in entry["inputs"]},
                outputs={t["name"]: TensorInfo.from_config(t, entry["params"]) for t in entry["outputs"]},
                params=entry["params"],
                model_dir=self.config.model_dir,
            )
            step = load_handler(entry["handler"])(config)
            if self.first is None and not self.stages:
                self.first = step
            self.stages.append(_Stage(entry, step.compute))

    def validate(self, arrays: dict[str, np.ndarray]) -> None:
        if self.first is not None:
            self.first.validate(arrays)

    def prepare(self, arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.first.prepare(arrays) if self.first is not None else arrays

    def compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        scope = dict(batch)
        for i, stage in enumerate(self.stages):
            # The first stage already ran its per-request prepare: it sees the prepared tensors.
            feed = (
                batch
                if i == 0 and self.first is not None
                else {k: scope[v] for k, v in stage.input_map.items()}
            )
            out = stage.compute(feed)
            for name, ens in stage.output_map.items():
                scope[ens] = out[name]
        return {name: scope[name] for name in self.config.outputs}


def _network_compute(runner: Runner) -> Any:
    def compute(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return runner.run({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items()})

    return compute
