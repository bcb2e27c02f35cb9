"""Rendered output: pinned by golden files, driven by facts, and refused when unsafe."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from provisioner import inventory
from provisioner.errors import InputError, RenderError
from provisioner.facts import load_facts
from provisioner.render import render
from provisioner.targets.lxc import check_lxc_config
from provisioner.settings import build_settings
from provisioner.targets import Target
from tests.conftest import EXAMPLE, ROOT

GOLDEN = ROOT / "tests" / "golden"


def _tree(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("target", list(Target))
def test_example_inventory_matches_golden_files(target, tmp_path):
    """Set UPDATE_GOLDEN=1 to rewrite tests/golden/ after an intended change, then review the diff."""
    loaded = inventory.load(EXAMPLE, target)
    render(loaded.hosts, tmp_path)
    golden = GOLDEN / target.value
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(golden, ignore_errors=True)
        shutil.copytree(tmp_path, golden)
    assert _tree(tmp_path) == _tree(golden)


def _lxc(**variables):
    return build_settings("pve1", Target.lxc, {"lxc_vmid": 120, **variables})


def test_lxc_rules_use_the_majors_of_the_hosts_facts(tmp_path):
    facts_dir = tmp_path / "facts"
    facts_dir.mkdir()
    (facts_dir / "lx1.json").write_text(json.dumps({
        "device_majors": {"nvidia-frontend": 195, "nvidia-uvm": 234, "nvidia-caps": 237},
        "nvidia_device_nodes": [
            {"path": "/dev/nvidia0", "major": 195, "minor": 0},
            {"path": "/dev/nvidia-uvm", "major": 234, "minor": 0},
            {"path": "/dev/nvidia-caps/nvidia-cap1", "major": 237, "minor": 1},
        ],
        "group_gids": {"video": 44, "render": 993},
        "cgroup_controllers": [],
    }))
    s = build_settings("lx1", Target.lxc, {"lxc_backend": "lxc", "lxc_name": "ai"})
    (result,) = render([s], tmp_path / "out", facts_dir)
    config = (result.directory / "host/var/lib/lxc/ai/config").read_text()
    allows = [line for line in config.splitlines() if line.startswith("lxc.cgroup2.devices.allow")]
    standard = [f"lxc.cgroup2.devices.allow = c {n} rwm" for n in ("1:3", "1:5", "1:7", "1:8", "1:9", "5:0", "5:1",
                                                                     "5:2", "136:*")]
    assert allows == standard + [f"lxc.cgroup2.devices.allow = c {m}:* rwm" for m in (195, 234, 237)]
    assert "lxc.mount.entry = /dev/nvidia-caps dev/nvidia-caps none bind,optional,create=dir" in config
    assert "memory.max" not in config and "cpu.max" not in config
    assert result.facts_source == "discovered"
    assert result.assumptions == []


def test_proxmox_before_8_1_gets_raw_lines_not_devN(tmp_path):
    facts_dir = tmp_path / "facts"
    facts_dir.mkdir()
    (facts_dir / "pve1.json").write_text(json.dumps({"proxmox_version": "7.4-3"}))
    (result,) = render([_lxc()], tmp_path / "out", facts_dir)
    api = json.loads((result.directory / "host/proxmox/lxc-120.json").read_text())
    raw = (result.directory / "host/etc/pve/lxc/120.conf.append").read_text()
    assert api["passthrough"] == "raw" and api["config"] == {}
    assert "lxc.cgroup2.devices.allow: c 195:* rwm" in raw
    # Facts discovery saw no nvidia-uvm major: the renderer says what it assumed instead.
    assert any("nvidia-uvm major not in /proc/devices" in a for a in result.assumptions)


def test_proxmox_8_1_gets_one_devN_entry_per_node(tmp_path):
    (result,) = render([_lxc()], tmp_path)
    api = json.loads((result.directory / "host/proxmox/lxc-120.json").read_text())
    facts = load_facts(None, "pve1")
    assert api["passthrough"] == "devN"
    assert list(api["config"].values()) == [f"{n.path},gid=44" for n in facts.nvidia_device_nodes]
    assert not (result.directory / "host/etc/pve").exists()


def test_kvm_binding_names_the_addresses_and_iommu_comes_from_cpu_vendor(tmp_path):
    facts_dir = tmp_path / "facts"
    facts_dir.mkdir()
    (facts_dir / "k1.json").write_text(json.dumps({
        "cpu_vendor": "amd",
        "pci_devices": [
            {"address": "0000:0a:00.0", "vendor_id": "10de", "device_id": "2684"},
            {"address": "0000:0a:00.1", "vendor_id": "10de", "device_id": "22ba"},
        ],
    }))
    s = build_settings("k1", Target.kvm, {"kvm_gpu_pci_addresses": ["0000:0a:00.0", "0000:0a:00.1"]})
    (result,) = render([s], tmp_path / "out", facts_dir)
    vfio = (result.directory / "host/etc/modprobe.d/ollama-provisioner-vfio.conf").read_text()
    bind = (result.directory / "host/usr/local/sbin/ollama-provisioner-vfio-bind").read_text()
    grub = (result.directory / "host/etc/default/grub.d/ollama-provisioner-iommu.cfg").read_text()
    xml = (result.directory / "host/libvirt/ollama-vm.xml").read_text()
    assert "ids=" not in vfio and "install vfio_pci /usr/local/sbin/ollama-provisioner-vfio-bind" in vfio
    assert "for pair in 0000:0a:00.0=0x10de:0x2684 0000:0a:00.1=0x10de:0x22ba; do" in bind
    assert "amd_iommu=on iommu=pt" in grub
    assert "<address domain='0x0000' bus='0x0a' slot='0x00' function='0x1'/>" in xml
    assert "<cpu mode='host-passthrough'" in xml


@pytest.mark.parametrize(
    "config",
    [
        "lxc.uts.name = x\n",
        "lxc.rootfs.path = dir:/\n",
        "# lxc.rootfs.path = dir:/var/lib/lxc/x/rootfs\n",
    ],
)
def test_lxc_config_without_its_own_root_is_refused(config):
    with pytest.raises(RenderError, match="would boot the host's /"):
        check_lxc_config(config)


def test_lxc_config_with_its_own_root_passes():
    check_lxc_config("lxc.rootfs.path = dir:/var/lib/lxc/x/rootfs\n")


def test_a_failed_render_leaves_no_half_written_host(tmp_path, monkeypatch):
    import provisioner.targets.lxc as lxc

    monkeypatch.setattr(lxc, "check_lxc_config", lambda text, source="": (_ for _ in ()).throw(RenderError("no")))
    s = build_settings("lx1", Target.lxc, {"lxc_backend": "lxc"})
    with pytest.raises(RenderError):
        render([s], tmp_path)
    assert not (tmp_path / "lx1").exists()


def test_settings_with_quotes_and_percent_stay_one_systemd_value(tmp_path):
    s = build_settings("g1", Target.native, {"ollama_extra_env": {"HTTPS_PROXY": 'http://u:p%"x@proxy:3128'}})
    (result,) = render([s], tmp_path)
    dropin = (result.directory / "host/etc/systemd/system/ollama.service.d/override.conf").read_text()
    assert 'Environment="HTTPS_PROXY=http://u:p%%\\"x@proxy:3128"' in dropin


def test_docker_daemon_fragment_adds_the_nvidia_runtime_only_on_a_gpu_host(runner, tmp_path):
    from provisioner.cli import app

    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "docker-box.json").write_text("{}")  # discovered: no NVIDIA device, no driver
    result = runner.invoke(app, ["render", "-t", "docker", "-i", str(EXAMPLE), "--facts", str(facts),
                                 "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "out/docker/docker-box/host/etc/docker/daemon.json.fragment").read_text()) == {}
    gpu = (GOLDEN / "docker/docker-box/host/etc/docker/daemon.json.fragment").read_text()
    assert json.loads(gpu)["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"


def test_insecure_registries_go_into_the_daemon_fragment_and_a_url_is_refused(tmp_path):
    s = build_settings("box", Target.docker, {"ollama_docker_insecure_registries": ["10.0.0.5:5000", "mirror.lan"]})
    (result,) = render([s], tmp_path)
    fragment = json.loads((result.directory / "host/etc/docker/daemon.json.fragment").read_text())
    assert fragment["insecure-registries"] == ["10.0.0.5:5000", "mirror.lan"]
    with pytest.raises(InputError) as err:
        build_settings("box", Target.docker, {"ollama_docker_insecure_registries": ["http://10.0.0.5:5000"]})
    assert "ollama_docker_insecure_registries" in str(err.value) and "HOST:PORT" in str(err.value)
