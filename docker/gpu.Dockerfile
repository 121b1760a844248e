# syntax=docker/dockerfile:1
# ecomgen, GPU image: NVIDIA's Triton 24.10 container (Triton 2.51.0, TensorRT 10.5, Python 3.10)
# plus the ecomgen serving package. The TensorRT plans are not in the image: they are built per
# GPU model on a GPU host (`python -m export.tensorrt`) and come from a volume, admitted by
# /opt/ecomgen/bin/check_engines.py (the parity gate, run as the pod's init container).
#
#   docker build -f docker/gpu.Dockerfile -t ecomgen-gpu:0.1.0 .
#
# Pinned by NVIDIA's release tag (a release tag is not rebuilt with other contents); pin the digest
# where you build (nvcr.io was unreachable where this file was written):
#   --build-arg TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3@sha256:<digest>
ARG TRITON_IMAGE=nvcr.io/nvidia/tritonserver:24.10-py3

# ---- build: install the serving set into a staging root ------------------------------------------
FROM ${TRITON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY docker/requirements-serve.txt docker/
RUN python3 -m pip install --no-cache-dir --root /install -r docker/requirements-serve.txt
COPY pyproject.toml README.md /pkg/
COPY ecomgen /pkg/ecomgen
COPY client /client
RUN python3 -m pip install --no-cache-dir --root /install --no-deps /client /pkg

# ---- serve -------------------------------------------------------------------------------------
FROM ${TRITON_IMAGE}
LABEL org.opencontainers.image.title="ecomgen-gpu" \
      org.opencontainers.image.description="ecomgen image generators on Triton 2.51.0 (NVIDIA 24.10, TensorRT 10.5)"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=build /install/ /
COPY model_repository/gpu /opt/ecomgen/model_repository/gpu
COPY deploy/check_engines.py /opt/ecomgen/bin/check_engines.py
# The Python-based backend `ecomgen`: a few-line model.py that imports the installed package.
RUN python3 -m ecomgen.serving.triton_backend /opt/tritonserver/backends/ecomgen \
 && python3 -m compileall -q /usr/local/lib/python3.10/dist-packages/ecomgen \
 && rm -rf /root/.cache
# triton-server, the non-root user of NVIDIA's image, by number (runAsNonRoot needs a numeric USER).
USER 1000:1000
EXPOSE 8000 8001 8002
HEALTHCHECK --interval=10s --timeout=3s --start-period=600s \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8000/v2/health/ready"]
ENTRYPOINT ["tritonserver"]
CMD ["--model-repository=/models", "--model-control-mode=none", "--strict-readiness=true", \
     "--exit-on-error=true", "--disable-auto-complete-config"]
