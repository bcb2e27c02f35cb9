#!/usr/bin/env bash
# Start the real services the infra tests use, on a machine without systemd as PID 1:
# the Docker engine, LXC's bridge (lxcbr0) and libvirtd with its default network.
# Idempotent: what already runs is left alone. Logs: $STATE/logs/.
set -euo pipefail
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
mkdir -p "$STATE/logs"

if ! docker info >/dev/null 2>&1; then
  echo "services: starting dockerd"
  # In a session of its own: killing the process group that started it (a shell job ended by a
  # timeout) must not take the engine down with it.
  setsid nohup dockerd >"$STATE/logs/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 0.5; done
  docker info >/dev/null 2>&1 || { tail -20 "$STATE/logs/dockerd.log"; exit 1; }
fi

# lxcbr0 is up only when its DHCP server answers too: the bridge (and lxc-net's network_up
# marker under /run) can outlive the dnsmasq that served it, and containers then get no address.
lxc_dnsmasq_alive() {
  local pid
  pid=$(cat /run/lxc/dnsmasq.pid 2>/dev/null) || return 1
  [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dnsmasq ]
}
if ! ip link show lxcbr0 >/dev/null 2>&1 || ! lxc_dnsmasq_alive; then
  echo "services: starting lxc-net (lxcbr0 and its dnsmasq)"
  # A stale pid file would make lxc-net's stop kill whatever now has that pid.
  lxc_dnsmasq_alive || rm -f /run/lxc/dnsmasq.pid
  rm -f /run/lxc/network_up
  /usr/libexec/lxc/lxc-net start >"$STATE/logs/lxc-net.log" 2>&1 || { cat "$STATE/logs/lxc-net.log"; exit 1; }
  lxc_dnsmasq_alive || { echo "services: lxc-net started but no dnsmasq serves lxcbr0"; cat "$STATE/logs/lxc-net.log"; exit 1; }
fi

if ! virsh -c qemu:///system version >/dev/null 2>&1; then
  echo "services: starting virtlogd and libvirtd"
  # Without this every domain start re-probes QEMU (about a minute each time).
  if [ -e /dev/kvm ]; then chgrp kvm /dev/kvm 2>/dev/null || true; chmod 0660 /dev/kvm || true; fi
  pgrep -x virtlogd >/dev/null || virtlogd -d
  libvirtd -d
  for _ in $(seq 60); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 0.5; done
fi
# The network the kvm target's test VM is on (virbr0, 192.168.122.1, its dnsmasq serves the DHCP leases).
if [ "$(virsh -c qemu:///system net-info default 2>/dev/null | awk '/^Active:/ {print $2}')" != yes ]; then
  echo "services: starting libvirt's default network"
  virsh -c qemu:///system net-start default >/dev/null
fi
echo "services: docker, lxcbr0, libvirtd and its default network are up"
