# syntax=docker/dockerfile:1
# ecomgen, CPU image: the embedded tritonserver of nvidia-pytriton 0.7.0 (Triton 2.51.0) serving
# the cpu model repository (Python-backend models on OpenVINO), built from the committed checkpoints.
#
#   docker build -f docker/cpu.Dockerfile -t ecomgen-cpu:0.1.0 .
#
# The base is pinned by tag; pin it by digest where you build (no registry was reachable where
# this file was written, so no digest could be verified):
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest from `docker buildx imagetools inspect`>
# Offline builds point TORCH_INDEX_URL at a local wheel index (deploy/README.md).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- build: the serving venv, then the ONNX export into the model repository --------------------
FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# No CPU-runtime calibration by default: it measures the *build* host, which need not be the node
# type the pods run on; the networks then run the portable fallback (OpenVINO fp32) unless the
# manifest passes `--cpu-runtime`. Build with ECOMGEN_BUILD_ARGS= on a host of the node type to
# bake in its calibrated choice.
ARG ECOMGEN_BUILD_ARGS=--no-calibrate
# Both unset unless given, and this stage only: behind a TLS-intercepting proxy, the proxy's CA
# bundle for pip; with a TORCH_INDEX_URL that holds torch alone (a local wheel), the index for
# torch's own dependencies (filelock, sympy, ...; the PyTorch CPU index carries them).
ARG PIP_CERT
ARG PIP_EXTRA_INDEX_URL
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src

# Serving venv: what the server imports, no torch. Installed first: it changes least often.
COPY docker/requirements-serve.txt docker/requirements-cpu.txt docker/
RUN python3 -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r docker/requirements-cpu.txt

# Build venv: torch from the CPU wheel index (PyPI's Linux wheel drags in CUDA, gigabytes) plus
# the project's own dependencies, constrained to the serving pins.
RUN python3 -m venv /opt/build-venv \
 && /opt/build-venv/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX_URL}" torch==2.13.0
COPY pyproject.toml README.md ./
COPY client client
COPY ecomgen ecomgen
COPY export export
COPY training training
COPY checkpoints checkpoints
COPY model_repository model_repository
# Run from the source tree (cwd first on sys.path): the export reads checkpoints/ next to it.
RUN /opt/build-venv/bin/pip install --no-cache-dir -c docker/requirements-cpu.txt ./client . \
 && /opt/build-venv/bin/python -m ecomgen build --repository /src/model_repository ${ECOMGEN_BUILD_ARGS} \
 && ls /src/model_repository/cpu/*/1/*.onnx

# Into the serving venv: the client and the ecomgen package alone (not export/ or training/).
# `ecomgen serve` stages its backends on every start (the Python stub for this interpreter and
# the `ecomgen` Python-based backend, under <site-packages>/build/triton); it only writes when
# they are missing, so staging them here leaves nothing to write in the read-only container.
# Then byte-compile, and drop pip from the venv. (-P: import the installed package, not ./ecomgen.)
RUN mkdir /pkg && cp -r pyproject.toml README.md ecomgen /pkg/ \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps ./client /pkg \
 && /opt/venv/bin/python -P -c "from ecomgen.launcher import BUILD_DIR, prepare_backend_dir; \
from ecomgen.serving.triton_backend import install; \
print(install(BUILD_DIR / 'backends' / 'ecomgen', prepare_backend_dir() / 'python'))" \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/pip uninstall -y pip setuptools

# ---- serve -------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="ecomgen-cpu" \
      org.opencontainers.image.description="ecomgen image generators on the embedded Triton 2.51.0 (CPU, OpenVINO)" \
      org.opencontainers.image.licenses="research checkpoints: see README, Data and licences"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# A numeric non-root user (the kubelet can only enforce runAsNonRoot on a numeric USER); no pip
# (nor ensurepip's bundled wheels) in the final image: nothing is installed at run time.
RUN groupadd --system --gid 10001 ecomgen \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ecomgen \
 && rm -rf /usr/local/bin/pip* /usr/local/lib/python3*/site-packages/pip \
      /usr/local/lib/python3*/site-packages/pip-* /usr/local/lib/python3*/ensurepip \
      /usr/share/python-wheels /root/.cache
COPY --from=build /opt/venv /opt/venv
COPY --from=build /src/model_repository/cpu /opt/ecomgen/model_repository/cpu
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s \
  CMD ["python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:8000/v2/health/ready', timeout=2)"]
ENTRYPOINT ["/opt/venv/bin/python", "-m", "ecomgen"]
CMD ["serve", "--no-build", "--repository=/opt/ecomgen/model_repository", "--address=0.0.0.0"]
