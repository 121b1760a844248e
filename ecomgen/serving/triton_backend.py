"""Triton's Python-based backend ``ecomgen``: one ``model.py`` for every Python model.

Each generated ``config.pbtxt`` says ``backend: "ecomgen"`` and names its step class in
the ``handler`` parameter; this module reads the requests through ``pb_utils``, hands
them to :func:`ecomgen.serving.step.run_batch` and turns the results into responses:
INVALID_ARG for a bad request, UNAVAILABLE for a dropped deadline, INTERNAL (with a
short message, never a traceback) for a bug. The repository holds no Python code.

Install the backend (the launcher does this for the embedded server; the GPU image runs it
at build time):

    python -m ecomgen.serving.triton_backend /opt/tritonserver/backends/ecomgen
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

from ecomgen.errors import DeadlineExceeded, Overloaded, RequestError
from ecomgen.serving.handlers import load_handler
from ecomgen.serving.networks import ViaBls
from ecomgen.serving.step import DEADLINE, Request, StepConfig, run_batch

# The file Triton loads from <backend dir>/model.py: the code lives in the installed package.
BACKEND_SHIM = '''"""Triton's Python-based backend "ecomgen": the code is in the installed ecomgen package."""

from ecomgen.serving.triton_backend import TritonPythonModel  # noqa: F401
'''
# What a Python-based backend needs besides model.py (Triton also looks in backends/python).
PYTHON_BACKEND_FILES = ("libtriton_python.so", "triton_python_backend_stub", "triton_python_backend_utils.py")


def install(backend_dir: Path, python_backend: Path | None = None) -> Path:
    """Write the shim ``model.py`` into ``backend_dir`` (idempotent).

    ``python_backend``: copy the Python backend's library, stub and utils beside it. Triton
    2.51 refuses a backend library whose real path lies outside the backend directory, so
    the embedded server (whose backends/python holds symlinks into the wheel) needs copies;
    NVIDIA's container finds real files in /opt/tritonserver/backends/python by itself.
    """
    backend_dir.mkdir(parents=True, exist_ok=True)
    target = backend_dir / "model.py"
    if not target.exists() or target.read_text() != BACKEND_SHIM:
        target.write_text(BACKEND_SHIM)
    if python_backend is not None:
        for name in PYTHON_BACKEND_FILES:
            src, dest = (python_backend / name).resolve(), backend_dir / name
            if not dest.exists() or dest.stat().st_size != src.stat().st_size:
                shutil.copy2(src, dest)
    return target


class TritonPythonModel:
    """The model class Triton instantiates for every ``backend: "ecomgen"`` model."""

    def initialize(self, args: dict[str, Any]) -> None:
        import triton_python_backend_utils as pb_utils

        self.pb = pb_utils
        config = json.loads(args["model_config"])
        model_dir = Path(args["model_repository"]) / str(args["model_version"])
        self.config = StepConfig.from_model_config(config, model_dir)
        networks = None
        if self.config.params.get("calls_via") == "bls":
            networks = ViaBls(pb_utils, json.loads(self.config.params.get("calls", "{}")))
        self.step = load_handler(self.config.params["handler"])(self.config, networks)
        self.default_deadline_us = int(self.config.params.get("deadline_us", "0"))
        codes = pb_utils.TritonError
        self.codes = {
            RequestError: codes.INVALID_ARG,
            DeadlineExceeded: getattr(codes, "UNAVAILABLE", codes.INTERNAL),
            # Triton's own queue-full status: clients back off instead of failing over.
            Overloaded: getattr(codes, "UNAVAILABLE", codes.INTERNAL),
        }

    def _read(self, request: Any) -> Request | Exception:
        # No request.is_cancelled() here: in the Python backend it is a round trip to the server
        # process for every request (measured in benchmarks.hotpath), and Triton's scheduler
        # already drops requests cancelled while they queued. Work that outlives its caller is
        # bounded by the deadline instead.
        arrays = {}
        names = [*self.config.inputs, *([DEADLINE] if self.config.checks_deadline else [])]
        try:
            for name in names:
                tensor = self.pb.get_input_tensor_by_name(request, name)
                if tensor is not None:
                    arrays[name] = tensor.as_numpy()
            timeout = int(request.timeout()) if hasattr(request, "timeout") else 0
        except Exception as e:  # e.g. a malformed BYTES payload: this request only
            return RequestError(f"an input could not be read ({type(e).__name__})")
        return Request(arrays, timeout)

    def execute(self, requests: list[Any]) -> list[Any]:
        pb = self.pb
        results = run_batch(self.step, [self._read(r) for r in requests], self.default_deadline_us)
        responses = []
        for result in results:
            if isinstance(result, Exception):
                code = self.codes.get(type(result), pb.TritonError.INTERNAL)
                responses.append(
                    pb.InferenceResponse(error=pb.TritonError(f"{self.config.name}: {result}", code))
                )
            else:
                tensors = [pb.Tensor(name, value) for name, value in result.items()]
                responses.append(pb.InferenceResponse(output_tensors=tensors))
        return responses

    def finalize(self) -> None:
        close = getattr(self.step, "close", None)
        if callable(close):
            close()
        if self.step.admission is not None:
            self.step.admission.close()


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m ecomgen.serving.triton_backend BACKEND_DIR", file=sys.stderr)
        return 2
    print(install(Path(args[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
