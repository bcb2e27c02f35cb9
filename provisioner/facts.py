"""What the templates need to know about a host, discovered or assumed.

Facts come from the discover playbook (one JSON document per host in a facts
directory). Where none were discovered, rendering still works offline with the
documented assumptions below, and every assumption used is reported, so a
person knows which lines of a rendered file to check against the real host.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import InputError

if TYPE_CHECKING:
    from .settings import HostSettings

NVIDIA_MAJOR = 195  # fixed by NVIDIA: /dev/nvidia0…, /dev/nvidiactl, /dev/nvidia-modeset
NVIDIA_VENDOR_ID = "10de"
# CPU flags that decide whether Ollama's CPU and GPU runners can work (AVX gating, ollama#2187).
CPU_FLAGS = ("avx", "avx2", "avx512f", "fma", "f16c")

# Ollama's minimum NVIDIA driver (docs/gpu.mdx; discover/cuda_compat.go).
MIN_DRIVER = 550
MIN_DRIVER_OLD_CC = 570  # compute capability 5.0 - 6.2


def driver_major(version: str | None) -> int | None:
    """The branch of a driver version: 550 for '550.90.07'; None when there is no version."""
    m = re.match(r"(\d+)", version or "")
    return int(m.group(1)) if m else None


def cpu_flags_of(flags_line: str) -> list[str]:
    """The flags of interest (CPU_FLAGS) in a /proc/cpuinfo 'flags : ...' line, in its order."""
    return [f for f in flags_line.partition(":")[2].split() if f in CPU_FLAGS]


def minimum_driver(compute_capability: tuple[int, int] | None) -> int:
    """The oldest driver branch Ollama's CUDA runners accept for a GPU of this compute capability."""
    if compute_capability and (5, 0) <= compute_capability <= (6, 2):
        return MIN_DRIVER_OLD_CC
    return MIN_DRIVER


_PROC_VERSION_RE = re.compile(r"Kernel Module(?: for \S+)?\s+(\d{3,}\.\d+(?:\.\d+)?)")


def driver_from_proc(text: str | None) -> str | None:
    """The kernel driver version in /proc/driver/nvidia/version ('NVRM version: … Kernel Module  550.54.14 …')."""
    if not text:
        return None
    m = _PROC_VERSION_RE.search(text)
    if m:
        return m.group(1)
    m = re.search(r"\b(\d{3,}\.\d+(?:\.\d+)?)\b", text)
    return m.group(1) if m else None


class DeviceNode(BaseModel):
    model_config = ConfigDict(extra="ignore")

    path: str
    major: int
    minor: int


# PCI class codes (the first four hex digits of sysfs `class`) named as lspci names them.
PCI_CLASS_NAMES = {
    "0100": "SCSI controller", "0104": "RAID controller", "0106": "SATA controller",
    "0108": "Non-Volatile memory controller", "0200": "Ethernet controller", "0280": "Network controller",
    "0300": "VGA compatible controller", "0302": "3D controller", "0380": "Display controller",
    "0401": "Multimedia audio controller", "0403": "Audio device", "0600": "Host bridge", "0601": "ISA bridge",
    "0604": "PCI bridge", "0c03": "USB controller", "0c05": "SMBus", "0c80": "Serial bus controller",
}
PCI_BRIDGE_CLASS = "0604"


class PciDevice(BaseModel):
    model_config = ConfigDict(extra="ignore")

    address: str  # 0000:01:00.0
    vendor_id: str  # 10de
    device_id: str  # 2204
    driver: str | None = None
    iommu_group: int | None = None
    # sysfs `class` without 0x, e.g. "030000" (VGA) or "040300" (audio); None in facts from before it was read.
    class_code: str | None = None
    # sysfs `boot_vga`: the firmware's boot display (only VGA functions have the file).
    boot_vga: bool = False
    # Not seen on the host: filled in from the documented assumptions (never written to a facts file).
    assumed: bool = Field(default=False, exclude=True)

    @property
    def slot(self) -> str:
        """The card this function belongs to: 0000:01:00 for 0000:01:00.1."""
        return self.address.rsplit(".", 1)[0]

    @property
    def class_name(self) -> str:
        code = (self.class_code or "")[:4]
        return PCI_CLASS_NAMES.get(code, f"class {code}" if code else "class unknown")

    @property
    def is_bridge(self) -> bool:
        return (self.class_code or "").startswith(PCI_BRIDGE_CLASS)

    def describe(self) -> str:
        """0000:00:14.0 (USB controller, 8086:a36d, driver xhci_hcd)"""
        driver = f", driver {self.driver}" if self.driver else ""
        return f"{self.address} ({self.class_name}, {self.vendor_id}:{self.device_id}{driver})"


class GpuFact(BaseModel):
    """One row of `nvidia-smi --query-gpu=name,compute_cap,memory.total,driver_version --format=csv,noheader`."""

    model_config = ConfigDict(extra="ignore")

    name: str
    compute_capability: str | None = None  # "8.9"
    memory_total_mib: int | None = None

    @property
    def cc(self) -> tuple[int, int] | None:
        m = re.fullmatch(r"(\d+)\.(\d+)", self.compute_capability or "")
        return (int(m[1]), int(m[2])) if m else None


class HostFacts(BaseModel):
    model_config = ConfigDict(extra="ignore")

    source: Literal["discovered", "assumed"] = "discovered"
    cpu_vendor: Literal["intel", "amd", "other"] = "intel"
    cpu_flags: list[str] = Field(default_factory=list)
    nvidia_driver_version: str | None = None
    # Character device majors by /proc/devices name, e.g. {"nvidia-uvm": 511}.
    device_majors: dict[str, int] = Field(default_factory=dict)
    nvidia_device_nodes: list[DeviceNode] = Field(default_factory=list)
    group_gids: dict[str, int] = Field(default_factory=dict)
    # The NVIDIA PCI functions (vendor 10de) ...
    pci_devices: list[PciDevice] = Field(default_factory=list)
    # ... and every other PCI function: what shares an IOMMU group with a card, what a wrong address names.
    other_pci_devices: list[PciDevice] = Field(default_factory=list)
    # Whether the kernel runs an IOMMU (/sys/kernel/iommu_groups has groups); None: not recorded
    # (a facts file from before discovery read it).
    iommu_enabled: bool | None = None
    # The running kernel's command line (/proc/cmdline); None: not recorded.
    kernel_cmdline: str | None = None
    # What writes the kernel command line: grub (update-grub) or systemd-boot (Proxmox VE booted by
    # proxmox-boot-tool with /etc/kernel/cmdline); None: not recorded.
    boot_loader: Literal["grub", "systemd-boot"] | None = None
    # What nvidia-smi reports on the host; empty without a driver (or without nvidia-smi).
    gpus: list[GpuFact] = Field(default_factory=list)
    proxmox_version: str | None = None
    cgroup_version: Literal[1, 2] = 2
    # Controllers enabled in the host's cgroup2 root (/sys/fs/cgroup/cgroup.controllers):
    # a container limit for a missing controller would stop LXC from starting.
    cgroup_controllers: list[str] = Field(default_factory=lambda: ["cpu", "memory"])
    # Which values were assumed rather than discovered: (topic, note for a person).
    # Topics: driver, devices, gids, cpu, proxmox, cgroup, pci (see TargetModule.facts_used).
    assumptions: list[tuple[str, str]] = Field(default_factory=list)

    @property
    def nvidia_pci_addresses(self) -> list[str]:
        """The PCI functions of vendor NVIDIA on the host."""
        return [d.address for d in self.pci_devices if d.vendor_id == NVIDIA_VENDOR_ID]

    @property
    def has_nvidia_gpu(self) -> bool:
        """An NVIDIA PCI device or a loaded NVIDIA driver: the host is installed for a GPU, not for CPU."""
        return bool(self.nvidia_pci_addresses or self.nvidia_driver_version)

    def pci_device(self, address: str) -> PciDevice | None:
        """The PCI function at ``address``, NVIDIA or not; None when the host has none there."""
        return next((d for d in [*self.pci_devices, *self.other_pci_devices] if d.address == address), None)

    def iommu_group_members(self, group: int) -> list[PciDevice]:
        """Every PCI function in IOMMU group ``group``, in address order."""
        return sorted((d for d in [*self.pci_devices, *self.other_pci_devices] if d.iommu_group == group),
                      key=lambda d: d.address)

    def card_functions(self, slot: str) -> list[PciDevice]:
        """Every function of the card in ``slot`` (0000:01:00), in address order."""
        return sorted((d for d in [*self.pci_devices, *self.other_pci_devices] if d.slot == slot),
                      key=lambda d: d.address)

    def pci_ids(self, address: str) -> str | None:
        dev = self.pci_device(address)
        return f"{dev.vendor_id}:{dev.device_id}" if dev else None


# --- documented assumptions (README: "Rendering before a host is reachable") ---
ASSUMED_DRIVER = "550.144.03"
ASSUMED_MAJORS = {"nvidia-frontend": NVIDIA_MAJOR, "nvidia-uvm": 511, "nvidia-caps": 510}
ASSUMED_NODES = [
    ("/dev/nvidia0", NVIDIA_MAJOR, 0),
    ("/dev/nvidiactl", NVIDIA_MAJOR, 255),
    ("/dev/nvidia-modeset", NVIDIA_MAJOR, 254),
    ("/dev/nvidia-uvm", 511, 0),
    ("/dev/nvidia-uvm-tools", 511, 1),
    ("/dev/nvidia-caps/nvidia-cap1", 510, 1),
    ("/dev/nvidia-caps/nvidia-cap2", 510, 2),
]
ASSUMED_GIDS = {"video": 44, "render": 104}
# A GeForce RTX 3090 and its HDMI audio function, the most common homelab passthrough card.
ASSUMED_PCI_IDS = {0: ("10de", "2204"), 1: ("10de", "1aef")}
ASSUMED_PROXMOX = "8.2"


def _assumed_pci(address: str) -> PciDevice:
    vendor, device = ASSUMED_PCI_IDS.get(int(address[-1]), ASSUMED_PCI_IDS[0])
    return PciDevice(address=address, vendor_id=vendor, device_id=device, assumed=True)


def assumed_facts(pci_addresses: list[str] | None = None) -> HostFacts:
    """Facts for a host nobody has looked at yet, each assumption written down."""
    pci = [_assumed_pci(addr) for addr in pci_addresses or []]
    notes = [
        ("driver", f"NVIDIA driver {ASSUMED_DRIVER} on the host"),
        ("devices", "device majors nvidia-uvm=511 and nvidia-caps=510 (they differ between hosts: "
                    "read `grep nvidia /proc/devices` on yours)"),
        ("devices", "device nodes " + ", ".join(p for p, _, _ in ASSUMED_NODES)),
        ("gids", "group ids video=44, render=104"),
        ("cpu", "an Intel CPU (intel_iommu=on)"),
        ("proxmox", f"Proxmox VE {ASSUMED_PROXMOX} (devN passthrough)"),
        ("cgroup", "cgroup v2 with the cpu and memory controllers on the host (lxc.cgroup2.* rules and limits)"),
    ]
    if pci:
        notes.append(("pci",
            "PCI ids " + ", ".join(f"{d.address}={d.vendor_id}:{d.device_id}" for d in pci)
            + " (an RTX 3090: check `lspci -nn -s ADDRESS`)"
        ))
    return HostFacts(
        source="assumed",
        cpu_vendor="intel",
        cpu_flags=["avx", "avx2"],
        nvidia_driver_version=ASSUMED_DRIVER,
        device_majors=dict(ASSUMED_MAJORS),
        nvidia_device_nodes=[DeviceNode(path=p, major=ma, minor=mi) for p, ma, mi in ASSUMED_NODES],
        group_gids=dict(ASSUMED_GIDS),
        pci_devices=pci,
        proxmox_version=ASSUMED_PROXMOX,
        assumptions=notes,
    )


def load_facts(facts_dir: Path | None, host: str, pci_addresses: list[str] | None = None) -> HostFacts:
    """The discovered facts of ``host`` in ``facts_dir``, else the documented assumptions."""
    if facts_dir is None:
        return assumed_facts(pci_addresses)
    path = facts_dir / f"{host}.json"
    if not path.exists():
        facts = assumed_facts(pci_addresses)
        facts.assumptions.insert(0, ("all", f"no facts file {path}"))
        return facts
    try:
        facts = HostFacts.model_validate(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValidationError) as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"facts file {path} is not valid ({first}); delete it and run discovery again") from None
    facts.source = "discovered"
    facts.assumptions = []
    # Fill what discovery could not see (a driver not loaded yet), and say so.
    for addr in pci_addresses or []:
        if facts.pci_ids(addr) is None:
            dev = _assumed_pci(addr)
            facts.pci_devices.append(dev)
            facts.assumptions.append(("pci", f"PCI device {addr} not seen on the host; assumed {dev.vendor_id}:{dev.device_id}"))
    for name, major in ASSUMED_MAJORS.items():
        if name not in facts.device_majors:
            facts.device_majors[name] = major
            facts.assumptions.append(("devices", f"{name} major not in /proc/devices (module not loaded?); assumed {major}"))
    for name, gid in ASSUMED_GIDS.items():
        if name not in facts.group_gids:
            facts.group_gids[name] = gid
            facts.assumptions.append(("gids", f"group {name} not found; assumed gid {gid}"))
    return facts


def load_hosts_facts(facts_dir: Path | None, hosts: list[HostSettings]) -> dict[str, HostFacts]:
    """Each host's facts, read once: from ``facts_dir`` (discovered), else the documented assumptions.

    The PCI functions a host's files name come from its target (TargetModule.pci_addresses).
    """
    return {s.host: load_facts(facts_dir, s.host, s.module.pci_addresses(s)) for s in hosts}
