#!/usr/bin/env bash
# Build the Debian guest image the kvm target's tests and `tests/infra/local.sh kvm` boot: no image
# is downloaded. From the debootstrapped root filesystem (tests/infra/bootstrap.sh) plus Debian's own
# packages: a kernel (linux-image-amd64), cloud-init (configured by the NoCloud seed the provisioner
# makes), openssh-server, the QEMU guest agent, python3, and nginx + openssl: what role ollama_proxy
# installs when the VM is exposed (the emulated guest would take minutes to read Debian's package lists
# itself); the distribution's nginx.service stays disabled, as the role leaves it. The root filesystem
# becomes an ext4 image (mkfs.ext4 -d, no partition table) converted to qcow2; the kernel and initrd
# sit beside it, since the guest is booted by passing them to QEMU directly (kvm_kernel, kvm_initrd,
# kvm_kernel_args).
#
# Built once and cached under $STATE/guest/<hash of this recipe>/: base.qcow2, vmlinuz, initrd.img.
# Prints that directory on stdout. Usage: bash tests/infra/guest-image.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
RECIPE_HASH=$(sha256sum "$0" | cut -c1-16)
OUT=$STATE/guest/$RECIPE_HASH
PACKAGES="linux-image-amd64 initramfs-tools cloud-init openssh-server qemu-guest-agent python3 sudo ifupdown
isc-dhcp-client zstd curl ca-certificates nginx openssl"
if [ -s "$OUT/base.qcow2" ] && [ -s "$OUT/vmlinuz" ] && [ -s "$OUT/initrd.img" ]; then
  echo "$OUT"; exit 0
fi
[ -s "$STATE/rootfs.tar" ] || { echo "guest-image: no $STATE/rootfs.tar: run tests/infra/bootstrap.sh" >&2; exit 1; }
mkdir -p "$STATE/guest" "$STATE/logs"
BUILD=$(mktemp -d "$STATE/guest/build.XXXXXX")
LOG=$STATE/logs/guest-image.log
T0=$(date +%s)
echo "guest-image: building $OUT (log: $LOG)" >&2
mkdir "$BUILD/root"
tar -C "$BUILD/root" --numeric-owner -xf "$STATE/rootfs.tar"
cp /etc/resolv.conf "$BUILD/root/etc/resolv.conf"
# Package scripts must not start services in the chroot.
printf '#!/bin/sh\nexit 101\n' > "$BUILD/root/usr/sbin/policy-rc.d"; chmod +x "$BUILD/root/usr/sbin/policy-rc.d"
# The chroot's mounts live in a private mount namespace: they vanish with it, whatever happens.
unshare -m --propagation private sh -ec '
  root=$1; packages=$2
  mount -t proc proc "$root/proc"; mount -t sysfs sys "$root/sys"; mount --bind /dev "$root/dev"
  chroot "$root" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive chroot "$root" apt-get install -y -qq --no-install-recommends $packages
  chroot "$root" apt-get clean
' sh "$BUILD/root" "$PACKAGES" >"$LOG" 2>&1 || { tail -30 "$LOG" >&2; exit 1; }
rm -f "$BUILD/root/usr/sbin/policy-rc.d"
R=$BUILD/root
echo '/dev/vda / ext4 defaults,discard 0 1' > "$R/etc/fstab"
# cloud-init finds its seed on the cdrom labelled cidata; nothing else is probed.
printf 'datasource_list: [NoCloud, None]\n' > "$R/etc/cloud/cloud.cfg.d/90-ollama-provisioner.cfg"
# A fresh identity per VM: machine-id, host keys and hostname come at first boot.
: > "$R/etc/machine-id"; rm -f "$R/var/lib/dbus/machine-id" "$R"/etc/ssh/ssh_host_* "$R/etc/hostname"
# ifupdown's interfaces file only sources the one cloud-init writes.
printf 'auto lo\niface lo inet loopback\nsource /etc/network/interfaces.d/*\n' > "$R/etc/network/interfaces"
rm -f "$R/etc/systemd/system/multi-user.target.wants/nginx.service"
ln -sf /lib/systemd/system/serial-getty@.service "$R/etc/systemd/system/getty.target.wants/serial-getty@ttyS0.service"
cp "$R"/boot/vmlinuz-* "$BUILD/vmlinuz"; cp "$R"/boot/initrd.img-* "$BUILD/initrd.img"
chmod 0644 "$BUILD/vmlinuz" "$BUILD/initrd.img"
mkfs.ext4 -q -L guestroot -d "$R" "$BUILD/root.img" 4G >>"$LOG" 2>&1
qemu-img convert -f raw -O qcow2 "$BUILD/root.img" "$BUILD/base.qcow2"
rm -rf "$R" "$BUILD/root.img"
# QEMU runs as libvirt-qemu: it reads the base image (the overlay's backing file), kernel and initrd.
chmod 0755 "$BUILD"; chmod 0644 "$BUILD/base.qcow2"
rm -rf "$OUT"; mv "$BUILD" "$OUT"
echo "guest-image: built $OUT in $(( $(date +%s) - T0 ))s" >&2
echo "$OUT"
