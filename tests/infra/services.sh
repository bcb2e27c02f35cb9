#!/usr/bin/env bash
# Start the real services the infra tests use, on a machine without systemd as PID 1:
# the Docker engine, LXC's bridge (lxcbr0) and libvirtd with its default network.
# Idempotent: what already runs is left alone. Logs: $STATE/logs/.
set -euo pipefail
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
mkdir -p "$STATE/logs"

if ! docker info >/dev/null 2>&1; then
  echo "services: starting dockerd"
  nohup dockerd >"$STATE/logs/dockerd.log" 2>&1 &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$STATE/logs/dockerd.log"; exit 1; }
fi

if ! ip link show lxcbr0 >/dev/null 2>&1; then
  echo "services: starting lxc-net (lxcbr0)"
  /usr/libexec/lxc/lxc-net start >"$STATE/logs/lxc-net.log" 2>&1
fi

if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "services: starting virtlogd and libvirtd"
  # Without this every domain start re-probes QEMU (about a minute each time).
  if [ -e /dev/kvm ]; then chgrp kvm /dev/kvm 2>/dev/null || true; chmod 0660 /dev/kvm || true; fi
  pgrep -x virtlogd >/dev/null || virtlogd -d
  libvirtd -d
  for _ in $(seq 60); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.5; done
fi
echo "services: docker, lxcbr0 and libvirtd are up"
