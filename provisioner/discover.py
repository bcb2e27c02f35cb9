"""Discover each host's facts with Ansible (playbooks/discover.yml) and parse them into HostFacts.

The gpu_facts role only collects raw outputs; parsing is this pure function, so it
is tested from recorded outputs of real hosts.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

from .evidence import parse_nodes, sections
from .facts import NVIDIA_VENDOR_ID, GpuFact, HostFacts, PciDevice, cpu_flags_of, driver_from_proc

if TYPE_CHECKING:
    from .runner import Runner
    from .settings import HostSettings
    from .workspace import Workspace

def _field(value: str | None) -> str | None:
    return None if value in (None, "", "-") else value


def parse_pci_line(line: str) -> PciDevice | None:
    """One '### pci' line: address vendor device driver iommu-group class boot_vga, '-' for none.

    Lines of older discoveries have no class and boot_vga, and an empty driver as two spaces.
    """
    parts = line.rstrip("\n").split(" ")
    if len(parts) < 3 or not parts[1].startswith("0x"):
        return None
    parts += [""] * (7 - len(parts))
    group, cls = _field(parts[4]), _field(parts[5])
    return PciDevice(
        address=parts[0], vendor_id=parts[1][2:], device_id=parts[2].removeprefix("0x"),
        driver=_field(parts[3]), iommu_group=int(group) if group and group.isdigit() else None,
        class_code=cls.removeprefix("0x") if cls else None, boot_vga=_field(parts[6]) == "1",
    )


def boot_loader(lines: list[str]) -> str:
    """systemd-boot for a Proxmox VE host whose ESPs proxmox-boot-tool keeps with /etc/kernel/cmdline
    (`proxmox-boot-tool status`: 'configured with: uefi'); grub otherwise."""
    text = "\n".join(lines)
    if "proxmox-boot-uuids" in text and "kernel-cmdline" in text and "configured with: grub" not in text:
        return "systemd-boot"
    return "grub"


def parse_raw(text: str) -> HostFacts:
    """HostFacts from the gpu_facts role's output (sections '### name')."""
    s = sections(text)
    majors: dict[str, int] = {}
    in_char = False
    for line in s.get("proc_devices", []):
        if line.startswith("Character devices"):
            in_char = True
        elif line.startswith("Block devices"):
            in_char = False
        elif in_char:
            parts = line.split()
            if len(parts) == 2 and parts[0].isdigit() and parts[1].startswith("nvidia"):
                majors[parts[1]] = int(parts[0])
    nodes = parse_nodes(s.get("nodes", []))
    gids = {}
    for line in s.get("groups", []):
        parts = line.split(":")
        if len(parts) >= 3 and parts[2].isdigit():
            gids[parts[0]] = int(parts[2])
    nvidia, others = [], []
    for line in s.get("pci", []):
        dev = parse_pci_line(line)
        if dev is not None:
            (nvidia if dev.vendor_id == NVIDIA_VENDOR_ID else others).append(dev)
    iommu = dict(line.partition(" ")[::2] for line in s.get("iommu", []))
    groups = iommu.get("groups", "").strip()
    cmdline = s.get("cmdline")
    cpu_vendor, flags = "other", []
    for line in s.get("cpuinfo", []):
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            cpu_vendor = {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(value.strip(), "other")
        elif key.strip() == "flags":
            flags = cpu_flags_of(line)
    gpus = []
    for line in s.get("smi", []):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0] or "failed" in line.lower():
            continue
        memory = re.match(r"(\d+)", parts[2])
        cc = parts[1] if re.fullmatch(r"\d+\.\d+", parts[1]) else None
        gpus.append(GpuFact(name=parts[0], compute_capability=cc, memory_total_mib=int(memory[1]) if memory else None))
    cgroup = s.get("cgroup", [])
    cgroup_version = 2 if cgroup and cgroup[0].strip() == "cgroup2fs" else 1
    controllers = cgroup[1].split() if cgroup_version == 2 and len(cgroup) > 1 else []
    pve = re.search(r"pve-manager/(\d+\.\d+(?:\.\d+)?)", "\n".join(s.get("proxmox", [])))
    return HostFacts(
        source="discovered",
        cpu_vendor=cpu_vendor,
        cpu_flags=flags,
        nvidia_driver_version=driver_from_proc("\n".join(s.get("driver", []))),
        device_majors=majors,
        nvidia_device_nodes=nodes,
        group_gids=gids,
        pci_devices=nvidia,
        other_pci_devices=others,
        iommu_enabled=int(groups) > 0 if groups.isdigit() else None,
        kernel_cmdline=cmdline[0].strip() if cmdline else None,
        boot_loader=boot_loader(s["boot"]) if "boot" in s else None,
        gpus=gpus,
        proxmox_version=pve.group(1) if pve else None,
        cgroup_version=cgroup_version,
        cgroup_controllers=controllers,
    )


def discover(workspace: Workspace, runner: Runner, hosts: list[HostSettings], *,
             limit: str | None = None) -> dict[str, HostFacts]:
    """Run the discover playbook on ``hosts`` (one target's) and write the workspace's facts/<host>.json."""
    facts_dir = workspace.facts.resolve()
    facts_dir.mkdir(parents=True, exist_ok=True)
    from .runner import host_limit

    runner.run("discover.yml", limit=host_limit(hosts, limit),
               extravars={"provision_group": hosts[0].module.group, "gpu_facts_dir": str(facts_dir)})
    found = {}
    for raw in sorted(facts_dir.glob("*.raw")):
        facts = parse_raw(raw.read_text())
        host = raw.name[: -len(".raw")]
        data = facts.model_dump(mode="json", exclude={"assumptions", "source"})
        (facts_dir / f"{host}.json").write_text(json.dumps(data, indent=2) + "\n")
        raw.unlink()
        found[host] = facts
    return found
