"""Launch and supervise the tritonserver that ships inside the nvidia-pytriton wheel.

The wheel carries Triton 2.51 (CPU) and its Python backend; the backend needs the stub built for
the running Python, and the stub needs this interpreter's site-packages on its path.
``TritonServer`` arranges both and starts one tritonserver process, secure by default:

- every endpoint binds 127.0.0.1 unless an address is given;
- the shared-memory, model-repository, logging and trace APIs sit behind an admin key on gRPC
  and HTTP (a random key nobody knows when none is configured, so they are effectively off);
- gRPC can use TLS, optionally mutual; HTTP can be turned off;
- the process can run as an unprivileged user (``ecomgen serve`` drops root to ``nobody``);
- Triton and its Python stubs live in their own process group. Triton gets SIGKILL when the
  launcher thread that started it dies (PR_SET_PDEATHSIG), a watchdog process kills the whole
  group when the launcher dies, and the launcher is a child subreaper, so stubs orphaned by a dead
  tritonserver come back to it and are killed and reaped. No stub outlives the launcher.

``serve`` (``ecomgen serve`` / ``python -m ecomgen.launcher``) supervises it: a clean drain exits
0 whoever sent the SIGTERM, a crash either restarts Triton with exponential backoff or exits
with a distinct code for an orchestrator (``--on-crash``). See ``EXIT_CODES_HELP`` and SECURITY.md.

``Launched`` (spawn.py) runs the launcher as a child process and waits for its ready banner, and
``wait_ready`` waits for a server started elsewhere; ``ProcessTree`` and ``Sampler`` (sampler.py) read
what a server's process tree uses (CPU by role, RSS, PSS, /dev/shm) from /proc.
"""

from __future__ import annotations

from ecomgen.launcher.config import *  # noqa: F403
from ecomgen.launcher.process import *  # noqa: F403
from ecomgen.launcher.sampler import *  # noqa: F403
from ecomgen.launcher.security import *  # noqa: F403
from ecomgen.launcher.server import *  # noqa: F403
from ecomgen.launcher.spawn import *  # noqa: F403
from ecomgen.launcher.supervisor import *  # noqa: F403
