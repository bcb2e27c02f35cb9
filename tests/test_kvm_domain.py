"""Role kvm_vm's module kvm_domain on libvirt's real test driver (test:///default: defines and "starts"
any domain in memory, one state per process): ownership, idempotency, the diff, the restart rule, check mode.
The real VM on qemu:///system is tests/test_kvm.py's."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from provisioner.settings import build_settings
from provisioner.targets import Target, get
from provisioner.targets.kvm import MARK_NS

libvirt = pytest.importorskip("libvirt")

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("kvm_domain", ROOT / "roles/kvm_vm/library/kvm_domain.py")
kvm_domain = importlib.util.module_from_spec(spec)
spec.loader.exec_module(kvm_domain)

URI = "test:///default"


class Failed(Exception):
    pass


class FakeModule:
    """What kvm_domain.run reads of AnsibleModule: params, check mode, diff mode, fail_json."""

    def __init__(self, check_mode: bool = False, **params) -> None:
        self.params = {"uri": URI, "state": "running", "xml": None, "mark_ns": MARK_NS, "allow_restart": False,
                       "address_timeout": 1, "shutdown_timeout": 1, **params}
        self.check_mode = check_mode
        self._diff = True

    def fail_json(self, msg: str, **kwargs) -> None:
        raise Failed(msg)


def domain_xml(name: str, memory: int = 256, mark: bool = True) -> str:
    metadata = f"<metadata><provisioner:domain xmlns:provisioner='{MARK_NS}' host='h'/></metadata>" if mark else ""
    return (f"<domain type='test'><name>{name}</name>{metadata}<memory unit='MiB'>{memory}</memory>"
            "<os><type arch='x86_64'>hvm</type></os></domain>")


@pytest.fixture
def conn(monkeypatch):
    """One test:///default connection for the test and the module (the test driver's state is per connection);
    the test driver has no DHCP leases: the address is stubbed."""
    c = libvirt.open(URI)
    monkeypatch.setattr(kvm_domain.libvirt, "open", lambda uri: c)
    monkeypatch.setattr(kvm_domain, "_addresses", lambda conn, dom: (["192.0.2.10"], []))
    yield c
    c.close()


def run(**kwargs):
    return kvm_domain.run(FakeModule(**kwargs))


def test_a_new_domain_is_defined_marked_started_and_its_address_returned(conn):
    result = run(name="vm1", xml=domain_xml("vm1"))
    assert result["changed"] and result["address"] == "192.0.2.10" and result["state"] == "running"
    dom = conn.lookupByName("vm1")
    assert dom.isActive() and dom.autostart()
    mark = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, MARK_NS, libvirt.VIR_DOMAIN_AFFECT_CONFIG)
    assert "rendered-sha256=" in mark


def test_the_same_xml_again_changes_nothing(conn):
    run(name="vm2", xml=domain_xml("vm2"))
    again = run(name="vm2", xml=domain_xml("vm2"))
    assert not again["changed"] and not again["restart_needed"] and again["address"] == "192.0.2.10"


def test_a_changed_xml_is_diffed_redefined_and_the_running_guest_is_not_restarted_unless_allowed(conn):
    run(name="vm3", xml=domain_xml("vm3", memory=256))
    started = conn.lookupByName("vm3").ID()
    changed = run(name="vm3", xml=domain_xml("vm3", memory=512))
    assert changed["changed"] and changed["restart_needed"]
    assert "-  <memory unit='KiB'>262144</memory>" in changed["xml_diff"]
    assert "+<domain type='test'><name>vm3</name>" in changed["xml_diff"]
    dom = conn.lookupByName("vm3")
    assert dom.ID() == started  # still the same run of the guest
    assert "524288" in dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
    restarted = run(name="vm3", xml=domain_xml("vm3", memory=768), allow_restart=True)
    assert restarted["changed"] and not restarted["restart_needed"]
    assert conn.lookupByName("vm3").ID() != started


def test_a_domain_of_the_same_name_without_the_mark_is_refused_and_left_as_it_was(conn):
    conn.defineXML(domain_xml("foreign", mark=False))
    before = conn.lookupByName("foreign").XMLDesc(0)
    for state in ("running", "absent", "query"):
        with pytest.raises(Failed, match="a domain named foreign exists on test:///default that ollama-provisioner "
                                         "did not define"):
            run(name="foreign", xml=domain_xml("foreign"), state=state)
    assert conn.lookupByName("foreign").XMLDesc(0) == before
    assert not conn.lookupByName("foreign").isActive()


def test_check_mode_defines_nothing_and_says_it_would(conn):
    result = run(name="vm4", xml=domain_xml("vm4"), check_mode=True)
    assert result["changed"] and result["address"] == ""
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("vm4")


def test_absent_undefines_only_the_projects_domain(conn):
    run(name="vm5", xml=domain_xml("vm5"))
    assert run(name="vm5", state="absent")["changed"]
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByName("vm5")
    assert not run(name="vm5", state="absent")["changed"]


def test_rendered_xml_without_the_mark_is_refused(conn):
    with pytest.raises(Failed, match="has no <metadata> element in namespace"):
        run(name="vm6", xml=domain_xml("vm6", mark=False))


def test_a_guest_without_an_address_says_what_was_seen(conn, monkeypatch):
    monkeypatch.setattr(kvm_domain, "_addresses", lambda conn, dom: ([], ["DHCP leases: none (vnet0)",
                                                                        "guest agent: not responding"]))
    with pytest.raises(Failed, match=r"VM vm7 got no IPv4 address in 1 s \(running; MAC .*DHCP leases: none "
                                     r"\(vnet0\); guest agent: not responding\)"):
        run(name="vm7", xml=domain_xml("vm7"))


# --- the rendered domain ----------------------------------------------------------------------------------


def _render(tmp_path, **variables):
    from provisioner.render import render

    s = build_settings("k1", Target.kvm, {"kvm_ssh_authorized_keys": ["ssh-ed25519 AAAA k"], **variables})
    [r] = render([s], tmp_path)
    return r, (tmp_path / "k1/host/libvirt" / f"{s.kvm_name}.xml").read_text()


def test_emulated_cpu_renders_host_model_with_avx_required_and_says_so(tmp_path):
    r, xml = _render(tmp_path, kvm_domain_type="qemu")
    assert "<domain type='qemu'>" in xml and "mode='host-model'" in xml and "<cpu mode='host-passthrough'" not in xml
    assert "<feature policy='require' name='avx2'/>" in xml
    assert any("host-passthrough is impossible" in n for n in r.notes)


def test_kvm_renders_host_passthrough(tmp_path):
    _, xml = _render(tmp_path, kvm_gpu_pci_addresses=["0000:01:00.0"])
    assert "<cpu mode='host-passthrough'" in xml and "host-model" not in xml


def test_direct_kernel_boot_replaces_the_firmware(tmp_path):
    _, xml = _render(tmp_path, kvm_kernel="/srv/vmlinuz", kvm_initrd="/srv/initrd.img")
    assert "<kernel>/srv/vmlinuz</kernel>" in xml and "<initrd>/srv/initrd.img</initrd>" in xml
    assert "<cmdline>root=/dev/vda rw console=ttyS0</cmdline>" in xml and "pflash" not in xml
    _, firmware = _render(tmp_path / "fw")
    assert "pflash" in firmware and "<kernel>" not in firmware


def test_no_gpu_listed_is_a_cpu_only_vm_expected_on_the_cpu(tmp_path):
    from provisioner.facts import assumed_facts

    s = build_settings("k1", Target.kvm, {"kvm_ssh_authorized_keys": ["ssh-ed25519 AAAA k"]})
    assert get(Target.kvm).check_settings(s) == []
    checked = get(Target.kvm).preflight(s, assumed_facts())
    assert checked.cpu_only and not checked.problems
    assert any("no GPU listed" in n for n in checked.notes)
    r, xml = _render(tmp_path)
    assert "<hostdev" not in xml and any("a CPU-only VM" in n for n in r.notes)


def test_a_vm_without_an_ssh_key_is_refused_at_preflight():
    from provisioner.facts import assumed_facts

    s = build_settings("k1", Target.kvm, {})
    checked = get(Target.kvm).preflight(s, assumed_facts())
    assert any("kvm_ssh_authorized_keys is empty" in p for p in checked.problems)


def test_the_guest_is_reached_over_ssh_with_its_address_found_at_run_time():
    s = build_settings("k1", Target.kvm, {"kvm_name": "vm9", "kvm_ssh_private_key_file": "/keys/id"})
    place = get(Target.kvm).place(s)
    assert place.name == "k1/vm-vm9"
    assert place.connection["ssh_via_host"] and place.connection["address_role"] == "kvm_vm"
    assert place.connection["address_lookup"] == {"name": "vm9", "uri": "qemu:///system", "mark_ns": MARK_NS}
    assert place.connection["ansible_ssh_private_key_file"] == "/keys/id"


# --- the judge on a guest's evidence ----------------------------------------------------------------------

# /proc/cpuinfo flags of a guest on QEMU's default qemu64 model (no AVX), and on the emulated host-model
# that the qemu domain type renders (read in the test VM of tests/test_kvm.py), abridged.
QEMU64_FLAGS = "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2 " \
               "syscall nx lm rep_good nopl xtopology cpuid tsc_known_freq pni cx16 x2apic hypervisor lahf_lm svm"
HOST_MODEL_FLAGS = QEMU64_FLAGS + " ssse3 fma sse4_1 sse4_2 movbe popcnt aes xsave avx f16c rdrand bmi1 avx2 bmi2"


@pytest.mark.parametrize(("flags", "fires"), [(QEMU64_FLAGS, True), (HOST_MODEL_FLAGS, False)])
def test_a_guest_cpu_without_avx_is_named_with_the_kvm_fix(flags, fires):
    from provisioner.judge import judge
    from tests.test_judge import healthy, on_cpu

    doc = on_cpu(healthy("kvm"))
    doc["cpu_flags"] = flags.split()
    verdict = judge(doc)
    causes = {c.rule: c for c in verdict.causes}
    assert ("vm-cpu-without-avx" in causes) is fires, [c.rule for c in verdict.causes]
    if fires:
        assert "lacks AVX" in causes["vm-cpu-without-avx"].cause
        assert "host-passthrough" in causes["vm-cpu-without-avx"].fix


# --- the role's disk: a qcow2 overlay on the base image as it is now ------------------------------------


def test_the_overlay_is_made_once_on_the_base_behind_a_link_never_on_the_link(tmp_path):
    import json
    import subprocess

    images = tmp_path / "images"
    build = images / "build-1"
    build.mkdir(parents=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(build / "base.qcow2"), "1G"], check=True)
    (images / "current").symlink_to(build)
    disk = tmp_path / "vm.qcow2"
    play = tmp_path / "play.yml"
    play.write_text(f"""
- hosts: localhost
  gather_facts: false
  tasks:
    - ansible.builtin.include_role: {{name: kvm_vm, tasks_from: disk.yml}}
      vars: {{kvm_vm_base_image: "{images}/current/base.qcow2", kvm_vm_disk_path: "{disk}", kvm_vm_disk_gib: 4}}
""")
    env = {**os.environ, "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_LOCALHOST_WARNING": "false"}
    cmd = [str(ROOT / ".venv/bin/ansible-playbook"), "-i", "localhost,", "-c", "local",
           "-e", "ansible_python_interpreter=/usr/bin/python3", str(play)]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert first.returncode == 0, first.stdout
    info = json.loads(subprocess.run(["qemu-img", "info", "--output=json", str(disk)], capture_output=True,
                                     text=True, check=True).stdout)
    assert info["backing-filename"] == str(build / "base.qcow2") and info["virtual-size"] == 4 * 2**30
    again = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout
    missing = subprocess.run([*cmd[:-1], "-e", f"kvm_vm_disk_path={tmp_path}/other.qcow2",
                              "-e", f"kvm_vm_base_image={images}/nope.qcow2", str(play)], capture_output=True, text=True,
                             env=env)
    assert missing.returncode != 0 and f"kvm_base_image = {images}/nope.qcow2 does not exist on localhost" in missing.stdout
