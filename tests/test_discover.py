"""Facts discovery: the parser from a recorded GPU host, and real Ansible runs through ansible-runner."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from provisioner.cli import app
from provisioner.discover import parse_raw

# What the gpu_facts role prints on a Proxmox VE node with an RTX 3090 (shapes of the real outputs;
# stat prints majors and minors in hexadecimal: 0xc3 = 195, 0x1ff = 511, 0x1fe = 510).
RAW_PVE = textwrap.dedent("""\
    ### proc_devices
    Character devices:
      1 mem
    195 nvidia-frontend
    226 drm
    510 nvidia-caps
    511 nvidia-uvm
    Block devices:
      8 sd
    ### nodes
    /dev/nvidia0 c3 0
    /dev/nvidiactl c3 ff
    /dev/nvidia-uvm 1ff 0
    /dev/nvidia-uvm-tools 1ff 1
    /dev/nvidia-caps/nvidia-cap1 1fe 1
    ### driver
    NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  Fri May 31 09:35:42 UTC 2024
    GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)
    ### smi
    NVIDIA GeForce RTX 3090, 8.6, 24576 MiB, 550.90.07
    ### groups
    video:x:44:
    render:x:104:
    ### pci
    0000:00:00.0 0x8086 0x3e30  0
    0000:01:00.0 0x10de 0x2204 nvidia 14
    0000:01:00.1 0x10de 0x1aef snd_hda_intel 14
    ### cpuinfo
    vendor_id	: GenuineIntel
    flags		: fpu vme sse4_2 avx f16c avx2 fma
    ### cgroup
    cgroup2fs
    cpuset cpu io memory hugetlb pids rdma misc
    ### proxmox
    pve-manager/8.2.4/faa83925c9641325 (running kernel: 6.8.12-1-pve)
    """)


def test_parse_raw_facts_of_a_proxmox_gpu_host():
    f = parse_raw(RAW_PVE)
    assert f.device_majors == {"nvidia-frontend": 195, "nvidia-caps": 510, "nvidia-uvm": 511}
    assert [(n.path, n.major, n.minor) for n in f.nvidia_device_nodes] == [
        ("/dev/nvidia0", 195, 0), ("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", 511, 0),
        ("/dev/nvidia-uvm-tools", 511, 1), ("/dev/nvidia-caps/nvidia-cap1", 510, 1)]
    assert f.nvidia_driver_version == "550.90.07"
    assert f.group_gids == {"video": 44, "render": 104}
    assert [(d.address, d.device_id, d.driver, d.iommu_group) for d in f.pci_devices] == [
        ("0000:01:00.0", "2204", "nvidia", 14), ("0000:01:00.1", "1aef", "snd_hda_intel", 14)]
    assert (f.cpu_vendor, f.cpu_flags) == ("intel", ["avx", "f16c", "avx2", "fma"])
    assert (f.cgroup_version, "memory" in f.cgroup_controllers, f.proxmox_version) == (2, True, "8.2.4")
    assert [(g.name, g.cc, g.memory_total_mib) for g in f.gpus] == [("NVIDIA GeForce RTX 3090", (8, 6), 24576)]


def test_parse_raw_ignores_an_nvidia_smi_that_cannot_talk_to_the_driver():
    f = parse_raw("### smi\nNVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. "
                  "Make sure that the latest NVIDIA driver is installed and running.\n")
    assert f.gpus == []


def test_parse_raw_of_a_host_without_gpu():
    f = parse_raw("### proc_devices\nCharacter devices:\n  1 mem\n### nodes\n### cgroup\ntmpfs\n### cpuinfo\n"
                  "vendor_id\t: AuthenticAMD\n")
    assert (f.nvidia_device_nodes, f.device_majors, f.cgroup_version, f.cpu_vendor) == ([], {}, 1, "amd")


def _local_inventory(tmp_path, **variables) -> str:
    import yaml

    host = {"ansible_connection": "local", "lxc_backend": "lxc", **variables}
    doc = {"all": {"children": {"lxc": {"hosts": {"localhost": host}}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(doc))
    return str(tmp_path / "hosts.yml")


@pytest.mark.infra
def test_discover_on_a_real_host_feeds_render(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inv = _local_inventory(tmp_path, ansible_python_interpreter=sys.executable)
    facts_dir = tmp_path / "facts"
    result = runner.invoke(app, ["discover", "-t", "lxc", "-i", inv, "--facts", str(facts_dir), "-v"])
    assert result.exit_code == 0, result.output
    assert "task: Read the GPU, driver, device, PCI/IOMMU, boot, cgroup and CPU facts of the host" in result.output
    facts = json.loads((facts_dir / "localhost.json").read_text())
    # Every PCI function of this machine, and its IOMMU state and kernel command line, as sysfs and /proc say.
    pci = sorted(p.name for p in Path("/sys/bus/pci/devices").iterdir())
    assert sorted(d["address"] for d in facts["pci_devices"] + facts["other_pci_devices"]) == pci
    assert facts["iommu_enabled"] == any(Path("/sys/kernel/iommu_groups").iterdir())
    assert facts["kernel_cmdline"] == Path("/proc/cmdline").read_text().strip()
    fs_type = subprocess.run(["stat", "-fc", "%T", "/sys/fs/cgroup"], capture_output=True, text=True).stdout.strip()
    assert facts["cgroup_version"] == (2 if fs_type == "cgroup2fs" else 1)
    vendor = next(line for line in open("/proc/cpuinfo") if line.startswith("vendor_id")).split(":")[1].strip()
    assert facts["cpu_vendor"] == {"GenuineIntel": "intel", "AuthenticAMD": "amd"}.get(vendor, "other")

    out = tmp_path / "out"
    result = runner.invoke(app, ["render", "-t", "lxc", "-i", inv, "--facts", str(facts_dir), "-o", str(out)])
    assert result.exit_code == 0, result.output
    config = (out / "lxc/localhost/host/var/lib/lxc/ollama/config").read_text()
    rule = "lxc.cgroup2.devices.allow" if facts["cgroup_version"] == 2 else "lxc.cgroup.devices.allow"
    assert f"{rule} = c 195:* rwm" in config


@pytest.mark.infra
def test_a_failed_run_names_host_task_and_message_and_keeps_the_log(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    inv = _local_inventory(tmp_path, ansible_python_interpreter="/nonexistent/python3")
    result = runner.invoke(app, ["discover", "-t", "lxc", "-i", inv, "--facts", str(tmp_path / "facts")])
    assert result.exit_code == 4
    assert "error: discover.yml failed on localhost, task 'Read the GPU, driver, device, PCI/IOMMU, boot, cgroup and CPU facts of the host'" in result.output
    assert "changes made before the failure: nothing was changed" in result.output
    assert "full log: " in result.output and (tmp_path / "runs").is_dir()
