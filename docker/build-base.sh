#!/usr/bin/env bash
# Build a Debian 12 base image without a registry: debootstrap a root filesystem, `docker import` it.
#
#   docker/build-base.sh [IMAGE]                     default IMAGE: mlbatch/debian-base:12
#   docker/build-base.sh --cuda-standin [IMAGE]      default IMAGE: mlbatch/cuda-standin:13.0.3
#
# For air-gapped builds (tests, machines with no registry): the train and score images take it as
# `--build-arg BASE_IMAGE=mlbatch/debian-base:12`. It holds python3 (3.11, the version the jobs'
# wheels are pinned for), python3-venv, python3-pip and ca-certificates; nothing else.
#
# --cuda-standin: what train.Dockerfile's production base (nvidia/cuda:13.0.3-base-ubuntu22.04,
# which cannot be pulled here) looks like to the Dockerfile: no Python (so the Dockerfile's apt
# step installs python3.11 and its venv module, as it does on Ubuntu), ca-certificates only, and
# the CUDA image's environment (NVIDIA_VISIBLE_DEVICES=all, NVIDIA_REQUIRE_CUDA, CUDA_VERSION), so
# a test can see what the train image overrides. No CUDA libraries: the wheels bring their own.
# Skips the work when the image already exists. Needs root (debootstrap, chroot).
# DEBIAN_MIRROR picks the mirror, e.g. a snapshot for a byte-for-byte repeatable base:
#   DEBIAN_MIRROR=http://snapshot.debian.org/archive/debian/20250520T000000Z docker/build-base.sh
set -euo pipefail

SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if [ "${1:-}" = "--cuda-standin" ]; then
    IMAGE="${2:-mlbatch/cuda-standin:13.0.3}"
    PACKAGES=ca-certificates
    # The environment nvidia/cuda:13.0.3-base-ubuntu22.04 declares (NVIDIA's Dockerfile).
    CHANGES=(--change 'ENV CUDA_VERSION=13.0.3'
        --change 'ENV NVIDIA_VISIBLE_DEVICES=all'
        --change 'ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility'
        --change 'ENV NVIDIA_REQUIRE_CUDA=cuda>=13.0'
        --change 'LABEL org.opencontainers.image.title=mlbatch-cuda-standin')
else
    IMAGE="${1:-mlbatch/debian-base:12}"
    PACKAGES=python3,python3-venv,python3-pip,ca-certificates
    CHANGES=()
fi

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "build-base: $IMAGE exists; nothing to do"
    exit 0
fi
if ! command -v debootstrap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi

start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/var/tmp}/mlbatch-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"

echo "build-base: debootstrap $SUITE from $MIRROR into $rootfs"
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 || {
    tail -30 "$work/debootstrap.log" >&2
    exit 1
}

# What an image does not need: package caches and lists (the images install with pip, not apt
# unless their base lacks python3.11), documentation, the machine id (regenerated per container).
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
    "$rootfs"/var/log/*.log "$rootfs"/tmp/*
: >"$rootfs/etc/machine-id"
echo "deb $MIRROR $SUITE main" >"$rootfs/etc/apt/sources.list"

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' \
    "${CHANGES[@]}" \
    --message "debootstrap $SUITE ($PACKAGES) from $MIRROR" \
    - "$IMAGE" >/dev/null

size=$(docker image inspect --format '{{.Size}}' "$IMAGE")
echo "build-base: built $IMAGE in $(($(date +%s) - start)) s, $((size / 1024 / 1024)) MiB"
