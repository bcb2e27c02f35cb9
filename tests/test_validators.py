"""Every rendered format checked by its real validator.

systemd-analyze (units and drop-ins), virt-xml-validate and libvirt's test driver
(domain XML), docker-compose (compose file), cloud-init (user-data), the JSON parser
(daemon.json fragment, Proxmox API parameters). The plain-LXC config is started for
real in test_lxc_start.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner import inventory
from provisioner.render import render
from provisioner.targets.native import security_exposure
from provisioner.targets import Target
from tests.conftest import EXAMPLE


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: run tests/infra/bootstrap.sh")
    return path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> dict[Target, Path]:
    out = tmp_path_factory.mktemp("rendered")
    dirs = {}
    for target in Target:
        (result,) = render(inventory.load(EXAMPLE, target).hosts, out / target.value)
        dirs[target] = result.directory
    return dirs


def _systemd_root(tmp_path: Path, rendered_dir: Path, scope: str) -> Path:
    """A root with the distribution's units, the rendered unit + drop-in and an executable ollama."""
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    shutil.copytree(rendered_dir / scope / "etc", root / "etc")
    binary = root / "usr/local/bin/ollama"
    binary.parent.mkdir(parents=True)
    binary.write_text("#!/bin/sh\n")
    binary.chmod(0o755)
    return root


@pytest.mark.parametrize(("target", "scope"), [(Target.native, "host"), (Target.lxc, "guest"), (Target.kvm, "guest")])
def test_unit_and_dropin_pass_systemd_analyze_verify(rendered, tmp_path, target, scope):
    root = _systemd_root(tmp_path, rendered[target], scope)
    proc = subprocess.run([need("systemd-analyze"), "verify", f"--root={root}", "ollama.service"],
                          capture_output=True, text=True)
    # verify exits 0 on lines it ignores: any message about our files is a failure.
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.strip() == "", proc.stderr


def test_verify_would_catch_a_broken_dropin(rendered, tmp_path):
    """The check above can fail: a bad line in the drop-in is reported."""
    root = _systemd_root(tmp_path, rendered[Target.native], "host")
    dropin = root / "etc/systemd/system/ollama.service.d/override.conf"
    dropin.write_text(dropin.read_text() + "Environmen=OLLAMA_X=1\n")
    proc = subprocess.run([need("systemd-analyze"), "verify", f"--root={root}", "ollama.service"],
                          capture_output=True, text=True)
    assert "Unknown key 'Environmen'" in proc.stderr


def test_service_is_hardened_but_can_open_nvidia_devices(rendered):
    unit = (rendered[Target.native] / "host/etc/systemd/system/ollama.service").read_text()
    dropin = (rendered[Target.native] / "host/etc/systemd/system/ollama.service.d/override.conf").read_text()
    directives = [line.split("=", 1)[0] for line in unit.splitlines() if "=" in line and not line.startswith("#")]
    assert "PrivateDevices" not in directives
    assert "DevicePolicy=closed" in unit and "DeviceAllow=char-nvidia* rw" in unit
    exposure = security_exposure(unit, dropin)
    assert exposure is not None
    score, verdict = exposure.split()
    assert float(score) <= 3.0 and verdict == "OK", exposure


def test_domain_xml_is_valid_libvirt_schema(rendered):
    xml = rendered[Target.kvm] / "host/libvirt/ollama-vm.xml"
    proc = subprocess.run([need("virt-xml-validate"), str(xml), "domain"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_domain_is_defined_and_started_on_libvirt_test_driver(rendered):
    libvirt = pytest.importorskip("libvirt")
    xml = (rendered[Target.kvm] / "host/libvirt/ollama-vm.xml").read_text()
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXML(xml)
        dom.create()
        assert dom.isActive() == 1
        live = dom.XMLDesc()
        assert "host-passthrough" in live
        assert live.count("<hostdev mode='subsystem' type='pci' managed='yes'>") == 2
        assert "<type arch='x86_64' machine='q35'>hvm</type>" in live
        dom.destroy()
        dom.undefine()
    finally:
        conn.close()


def test_broken_domain_xml_is_rejected_by_the_validator(rendered, tmp_path):
    xml = (rendered[Target.kvm] / "host/libvirt/ollama-vm.xml").read_text()
    broken = tmp_path / "broken.xml"
    broken.write_text(xml.replace("<vcpu placement='static'>", "<vcpu placement='nowhere'>"))
    proc = subprocess.run([need("virt-xml-validate"), str(broken), "domain"], capture_output=True, text=True)
    assert proc.returncode != 0


def test_compose_file_passes_docker_compose_config(rendered):
    compose = rendered[Target.docker] / "host/opt/ollama/compose.yaml"
    proc = subprocess.run([need("docker-compose"), "-f", str(compose), "config"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    import yaml

    service = yaml.safe_load(proc.stdout)["services"]["ollama"]
    assert service["image"] == "ollama/ollama:0.30.10"
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert service["ports"] == ["127.0.0.1:11434:11434/tcp"]
    assert service["healthcheck"]["test"] == ["CMD", "ollama", "list"]


def test_daemon_json_fragment_is_json_with_runtime_and_cgroupfs(rendered):
    fragment = json.loads((rendered[Target.docker] / "host/etc/docker/daemon.json.fragment").read_text())
    assert fragment["runtimes"]["nvidia"]["path"] == "nvidia-container-runtime"
    assert fragment["exec-opts"] == ["native.cgroupdriver=cgroupfs"]


@pytest.mark.parametrize("name", ["user-data"])
def test_cloud_init_user_data_passes_cloud_init_schema(rendered, name):
    path = rendered[Target.kvm] / f"host/var/lib/libvirt/images/ollama-vm-seed/{name}"
    proc = subprocess.run([need("cloud-init"), "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Valid cloud-config" in proc.stdout


def test_cloud_init_schema_would_reject_a_bad_key(rendered, tmp_path):
    path = rendered[Target.kvm] / "host/var/lib/libvirt/images/ollama-vm-seed/user-data"
    bad = tmp_path / "user-data"
    text = path.read_text()
    assert "ssh_pwauth: false\n" in text
    bad.write_text(text.replace("ssh_pwauth: false\n", "ssh_pwauth: false\nusers: 5\n"))
    proc = subprocess.run([need("cloud-init"), "schema", "--config-file", str(bad)], capture_output=True, text=True)
    assert proc.returncode != 0


def test_meta_data_is_yaml_with_instance_id(rendered):
    import yaml

    meta = yaml.safe_load((rendered[Target.kvm] / "host/var/lib/libvirt/images/ollama-vm-seed/meta-data").read_text())
    assert meta == {"instance-id": "ollama-vm", "local-hostname": "ollama-vm"}
