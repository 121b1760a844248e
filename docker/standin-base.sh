#!/bin/sh
# Build a local stand-in for python:3.11-slim-bookworm when no container registry is reachable
# (only the Debian mirror and PyPI were, where this project was written). Debian bookworm's own
# Python 3.11 (3.11.2, /usr/bin) instead of the official image's (/usr/local/bin): the
# Dockerfile only relies on `python3`, `python3 -m venv`, libpython3.11.so and groupadd/useradd,
# which both provide. Needs root, debootstrap and podman (apt-get install debootstrap podman).
#
#   sh docker/standin-base.sh            # -> localhost/ecomgen-standin/python:3.11-bookworm
#   podman --storage-driver vfs build --network host \
#     --build-arg PYTHON_IMAGE=localhost/ecomgen-standin/python:3.11-bookworm ...   (deploy/README.md)
set -eu
ROOTFS=${ROOTFS:-/tmp/ecomgen-standin/rootfs}
TAG=${TAG:-localhost/ecomgen-standin/python:3.11-bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

if [ ! -x "$ROOTFS/usr/bin/python3.11" ]; then
  rm -rf "$ROOTFS"
  mkdir -p "$ROOTFS"
  debootstrap --variant=minbase bookworm "$ROOTFS" "$MIRROR"
  chroot "$ROOTFS" /bin/sh -c 'apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
         python3.11 python3.11-venv libpython3.11 ca-certificates \
    && apt-get clean && rm -rf /var/lib/apt/lists/*'
fi
ln -sf python3.11 "$ROOTFS/usr/bin/python3"
tar -C "$ROOTFS" -c . | podman --storage-driver vfs import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' - "$TAG"
