"""Where things are in a source checkout: the one home of the repository root.

The installed ``ecomgen`` package never needs it (it takes paths as arguments); training,
evaluation, export, the benchmarks and the deployment scripts run from a checkout and
read their defaults from here.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
CHECKPOINT_DIR = REPO_ROOT / "checkpoints"
BUILD_DIR = REPO_ROOT / "build"
MODEL_REPOSITORY = REPO_ROOT / "model_repository"
RESULTS_DIR = REPO_ROOT / "training" / "results"
# ../shared/data beside the checkout (the development machines and CI); ECOMGEN_DATA overrides it.
SHARED_DATA = Path(os.environ.get("ECOMGEN_DATA", REPO_ROOT.parent / "shared" / "data"))
