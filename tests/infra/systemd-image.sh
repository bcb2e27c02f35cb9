#!/usr/bin/env bash
# The local image with systemd as PID 1 that plays a native host (molecule, tests and
# the README's quick start): the debootstrapped rootfs imported into Docker.
# Idempotent: an existing image is kept. Needs dockerd running (services.sh).
set -euo pipefail
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
IMAGE=${OLLAMA_PROVISIONER_IMAGE:-local/debian-systemd:bookworm}
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
  echo "image: $IMAGE present"
  exit 0
fi
echo "image: importing $STATE/rootfs as $IMAGE"
tar -C "$STATE/rootfs" -c . | docker import --change 'CMD ["/sbin/init"]' --change 'ENV container=docker' - "$IMAGE" >/dev/null
