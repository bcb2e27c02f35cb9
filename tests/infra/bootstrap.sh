#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian 12 machine of this
# project's kind (root, no systemd as PID 1): apt packages, the Python virtual
# environment with the project and its test tools, and a debootstrapped Debian
# root filesystem with systemd that the container and LXC tests boot.
#
# Idempotent: a second run installs nothing new and takes seconds.
# Usage: bash tests/infra/bootstrap.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$STATE/logs"
T0=$(date +%s)
phase() { echo "=== [bootstrap $(( $(date +%s) - T0 ))s] $*"; }

APT_PACKAGES=(
  docker.io docker-compose debootstrap iptables lxc lxc-dev dnsmasq-base bridge-utils rsync
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-daemon-driver-qemu
  libvirt-clients libvirt-dev libxml2-utils pkg-config gcc e2fsprogs openssh-client
  cloud-init zstd curl ca-certificates docker-registry
  genisoimage python3-libvirt
)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  phase "apt: installing ${missing[*]}"
  # Package scripts must not start services: this machine has no systemd and
  # the tests start what they need themselves.
  [ -x /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >"$STATE/logs/apt.log" 2>&1 || { tail -30 "$STATE/logs/apt.log"; exit 1; }
else
  phase "apt: all packages present"
fi

phase "python: virtual environment .venv"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" >"$STATE/logs/pip.log" 2>&1 \
  || { tail -30 "$STATE/logs/pip.log"; exit 1; }

phase "rootfs: Debian bookworm with systemd ($STATE/rootfs)"
if [ ! -x "$STATE/rootfs/sbin/init" ]; then
  rm -rf "$STATE/rootfs.tmp"
  debootstrap --variant=minbase \
    --include=systemd,systemd-sysv,dbus,python3,sudo,iproute2,curl,ca-certificates,zstd \
    bookworm "$STATE/rootfs.tmp" "$MIRROR" >"$STATE/logs/debootstrap.log" 2>&1 \
    || { tail -30 "$STATE/logs/debootstrap.log"; exit 1; }
  mv "$STATE/rootfs.tmp" "$STATE/rootfs"
fi
# The same root as a tarball: what a plain-LXC container is created from (lxc_rootfs_tarball).
if [ ! -s "$STATE/rootfs.tar" ] || [ "$STATE/rootfs" -nt "$STATE/rootfs.tar" ]; then
  phase "rootfs: tarball $STATE/rootfs.tar"
  tar -C "$STATE/rootfs" --numeric-owner -cf "$STATE/rootfs.tar.tmp" . && mv "$STATE/rootfs.tar.tmp" "$STATE/rootfs.tar"
fi
phase "done"
