"""All the steps of a served model in one Python model (the cpu target's ``fuse_on_cpu``).

On a CPU host every step runs in the same processes anyway; fusing them means a batch
crosses the Python stub's shared memory once instead of once per step, and waits in
one queue under one deadline. The ``pipeline`` parameter lists the steps with their
tensor wiring, exactly as the ensemble would run them on the gpu target.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ecomgen.serving.handlers import load_handler
from ecomgen.serving.handlers.network import network_runner
from ecomgen.serving.runners import Runner
from ecomgen.serving.step import Step, StepConfig, TensorInfo


@dataclass
class Stage:
    """One step of a pipeline: its tensors by step name <-> ensemble name, and its compute."""

    name: str
    input_map: dict[str, str]
    output_map: dict[str, str]
    compute: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]


class StagedPipeline(Step):
    """Runs ``self.stages`` (built by ``setup``) in order over one scope of ensemble tensors.

    The first stage's Python step (``self.first``), if any, also validates and prepares each
    request, as it would at the head of the ensemble.
    """

    stages: list[Stage]
    first: Step | None = None

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
                # An optional input the caller left out is absent here too, as in the ensemble.
                else {k: scope[v] for k, v in stage.input_map.items() if v in scope}
            )
            out = stage.compute(feed)
            for name, ens in stage.output_map.items():
                scope[ens] = out[name]
        return {name: scope[name] for name in self.config.outputs}


class FusedPipeline(StagedPipeline):
    def setup(self) -> None:
        self.stages = []
        for entry in json.loads(self.params["pipeline"]):
            maps = entry["name"], entry["input_map"], entry["output_map"]
            if entry["kind"] == "network":
                runner: Runner = network_runner(self, entry["network"])
                self.stages.append(Stage(*maps, _network_compute(runner)))
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
            if not self.stages:
                self.first = step
            self.stages.append(Stage(*maps, step.compute))


def _network_compute(runner: Runner) -> Any:
    def compute(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return runner.run({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feed.items()})

    return compute
