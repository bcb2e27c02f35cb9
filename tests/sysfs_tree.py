"""Sysfs trees laid out like the real one, for the VFIO host checks.

``write_tree`` writes, under a root directory, what the discovery script
(roles/gpu_facts/files/gpu-facts.sh) reads on a host: /sys/bus/pci/devices/<address>/ with
vendor, device, class, boot_vga (VGA functions only) and driver_override files, ``driver`` and
``iommu_group`` as relative symlinks (to /sys/bus/pci/drivers/<name> and
/sys/kernel/iommu_groups/<n>), /sys/kernel/iommu_groups/<n>/devices/<address> symlinks back,
/sys/class/iommu/<unit> when the IOMMU is on, /proc/cmdline, /proc/cpuinfo and, for a Proxmox VE
host booted by systemd-boot, /etc/kernel/{proxmox-boot-uuids,cmdline}.

``facts_of`` runs the discovery script itself on the tree (GPU_FACTS_ROOT) and parses its output
with the parser discovery uses, so the checks read exactly the format discovery produces.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from provisioner.discover import parse_raw
from provisioner.facts import HostFacts
from tests.conftest import ROOT

SCRIPT = ROOT / "roles/gpu_facts/files/gpu-facts.sh"


@dataclass
class Fn:
    """One PCI function: address, 'vendor:device', class (6 hex digits), driver, IOMMU group."""

    address: str
    ids: str
    cls: str
    driver: str | None = None
    group: int | None = None
    boot_vga: bool = False


@dataclass
class Host:
    functions: list[Fn]
    iommu: str | None = "dmar0"  # the IOMMU unit's name (dmar0 Intel, ivhd0 AMD); None: IOMMU off
    cpu: str = "GenuineIntel"
    cmdline: str = "BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0b1c ro quiet intel_iommu=on iommu=pt"
    proxmox_systemd_boot: bool = False
    extra: dict[str, str] = field(default_factory=dict)


def _link(path: Path, target: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(os.path.relpath(target, path.parent))


def write_tree(root: Path, host: Host) -> Path:
    sys = root / "sys"
    for fn in host.functions:
        real = sys / "devices/pci0000:00" / fn.address
        real.mkdir(parents=True)
        vendor, device = fn.ids.split(":")
        (real / "vendor").write_text(f"0x{vendor}\n")
        (real / "device").write_text(f"0x{device}\n")
        (real / "class").write_text(f"0x{fn.cls}\n")
        (real / "driver_override").write_text("(null)\n")
        if fn.cls.startswith("0300"):
            (real / "boot_vga").write_text("1\n" if fn.boot_vga else "0\n")
        _link(sys / "bus/pci/devices" / fn.address, real)
        if fn.driver:
            drv = sys / "bus/pci/drivers" / fn.driver
            drv.mkdir(parents=True, exist_ok=True)
            _link(real / "driver", drv)
        if fn.group is not None and host.iommu:
            grp = sys / "kernel/iommu_groups" / str(fn.group)
            (grp / "devices").mkdir(parents=True, exist_ok=True)
            _link(real / "iommu_group", grp)
            _link(grp / "devices" / fn.address, real)
    (sys / "kernel/iommu_groups").mkdir(parents=True, exist_ok=True)
    (sys / "class/iommu").mkdir(parents=True, exist_ok=True)
    if host.iommu:
        (sys / "class/iommu" / host.iommu).mkdir()
    proc = root / "proc"
    proc.mkdir(parents=True, exist_ok=True)
    (proc / "cmdline").write_text(host.cmdline + "\n")
    (proc / "cpuinfo").write_text(f"vendor_id\t: {host.cpu}\nflags\t\t: fpu sse4_2 avx avx2 fma f16c\n")
    if host.proxmox_systemd_boot:
        (root / "etc/kernel").mkdir(parents=True)
        (root / "etc/kernel/proxmox-boot-uuids").write_text("5A1B-2C3D\n")
        (root / "etc/kernel/cmdline").write_text("root=ZFS=rpool/ROOT/pve-1 boot=zfs\n")
    return root


def raw_of(root: Path) -> str:
    """The discovery script's output on the tree under ``root``."""
    proc = subprocess.run(["sh", str(SCRIPT)], env={**os.environ, "GPU_FACTS_ROOT": str(root)},
                          capture_output=True, text=True, check=True)
    return proc.stdout


def facts_of(root: Path, host: Host) -> HostFacts:
    write_tree(root, host)
    return parse_raw(raw_of(root))


# --- the fixture hosts ------------------------------------------------------------------------
BRIDGE = Fn("0000:00:01.0", "8086:1901", "060400", "pcieport", 1)
HOST_BRIDGE = Fn("0000:00:00.0", "8086:3e30", "060000", "skl_uncore", 0)
IGPU = Fn("0000:00:02.0", "8086:3e92", "030000", "i915", 2, boot_vga=True)
USB = Fn("0000:00:14.0", "8086:a36d", "0c0330", "xhci_hcd", 3)
NIC = Fn("0000:03:00.0", "8086:1533", "020000", "igb", 1)
RTX_3090 = [Fn("0000:01:00.0", "10de:2204", "030000", "nvidia", 1), Fn("0000:01:00.1", "10de:1aef", "040300", "snd_hda_intel", 1)]


def clean_isolated() -> Host:
    """An RTX 3090 behind its root port, group 1 holding only the bridge and the card; the iGPU boots."""
    return Host([HOST_BRIDGE, BRIDGE, IGPU, USB, *RTX_3090])


def shared_with_nic() -> Host:
    """The card's group also holds an Intel I210 NIC behind the same chipset port (no ACS)."""
    return Host([HOST_BRIDGE, BRIDGE, IGPU, USB, NIC, *RTX_3090])


def shared_with_usb() -> Host:
    """The card's group also holds the chipset's USB controller."""
    usb = Fn(USB.address, USB.ids, USB.cls, USB.driver, 1)
    return Host([HOST_BRIDGE, BRIDGE, IGPU, usb, *RTX_3090])


def boot_vga() -> Host:
    """No iGPU: the RTX 3090 is the firmware's boot display."""
    card = [Fn(RTX_3090[0].address, "10de:2204", "030000", "nvidia", 1, boot_vga=True), RTX_3090[1]]
    return Host([HOST_BRIDGE, BRIDGE, USB, *card])


def two_identical_cards() -> Host:
    """Two RTX 3090s, each in its own group (01:00 under 00:01.0, 02:00 under 00:01.1)."""
    second = [Fn("0000:02:00.0", "10de:2204", "030000", "nvidia", 4),
              Fn("0000:02:00.1", "10de:1aef", "040300", "snd_hda_intel", 4)]
    return Host([HOST_BRIDGE, BRIDGE, Fn("0000:00:01.1", "8086:1905", "060400", "pcieport", 4), IGPU, USB,
                 *RTX_3090, *second])


def iommu_off() -> Host:
    """VT-d off in the firmware and no intel_iommu=on: the kernel made no IOMMU groups."""
    return Host([HOST_BRIDGE, BRIDGE, IGPU, USB, *RTX_3090], iommu=None,
                cmdline="BOOT_IMAGE=/boot/vmlinuz-6.1.0-28-amd64 root=UUID=0b1c ro quiet")


def amd_host() -> Host:
    """A Ryzen host (AMD-Vi, on by default): an RTX 4090 alone in group 15; Proxmox VE on systemd-boot."""
    card = [Fn("0000:0a:00.0", "10de:2684", "030000", "nvidia", 15),
            Fn("0000:0a:00.1", "10de:22ba", "040300", "snd_hda_intel", 15)]
    return Host([Fn("0000:00:00.0", "1022:14d8", "060000", None, 0), Fn("0000:00:01.1", "1022:14db", "060400",
                 "pcieport", 15), *card], iommu="ivhd0", cpu="AuthenticAMD",
                cmdline="initrd=\\EFI\\proxmox\\6.8.12-4-pve\\initrd.img-6.8.12-4-pve root=ZFS=rpool/ROOT/pve-1 boot=zfs",
                proxmox_systemd_boot=True)


def turing_four_functions() -> Host:
    """An RTX 2080 Ti (Turing): VGA, HDMI audio, USB 3.1 and USB-C UCSI, all in group 1."""
    card = [Fn("0000:01:00.0", "10de:1e07", "030000", "nvidia", 1),
            Fn("0000:01:00.1", "10de:10f7", "040300", "snd_hda_intel", 1),
            Fn("0000:01:00.2", "10de:1ad6", "0c0330", "xhci_hcd", 1),
            Fn("0000:01:00.3", "10de:1ad7", "0c8000", "nvidia-gpu", 1)]
    return Host([HOST_BRIDGE, BRIDGE, IGPU, USB, *card])
