"""The VFIO host checks of the kvm target, on sysfs trees laid out like the real one.

Each tree (tests/sysfs_tree.py) is read by the discovery script itself and parsed by discovery's
parser, so the checks see exactly what `provision discover` records. The rendered per-address
binding is run on the tree of two identical cards: only the listed one is claimed.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from provisioner.discover import parse_pci_line, parse_raw
from provisioner.errors import PreflightError
from provisioner.facts import HostFacts, load_facts
from provisioner.preflight import preflight
from provisioner.render import render
from provisioner.settings import build_settings
from provisioner.targets import Target
from tests import sysfs_tree as trees

CARD = ["0000:01:00.0", "0000:01:00.1"]


def _settings(addresses=CARD, **variables):
    return build_settings("gpu1", Target.kvm, {"kvm_gpu_pci_addresses": addresses, **variables})


def _check(tmp_path, host, addresses=CARD, **variables):
    s = _settings(addresses, **variables)
    return s.module.preflight(s, trees.facts_of(tmp_path / "root", host))


# --- what discovery records ---------------------------------------------------------------------


def test_discovery_records_class_boot_vga_groups_iommu_and_cmdline(tmp_path):
    facts = trees.facts_of(tmp_path, trees.clean_isolated())
    assert facts.nvidia_pci_addresses == CARD
    vga = facts.pci_device("0000:01:00.0")
    assert (vga.class_code, vga.boot_vga, vga.driver, vga.iommu_group) == ("030000", False, "nvidia", 1)
    igpu = facts.pci_device("0000:00:02.0")
    assert (igpu.vendor_id, igpu.boot_vga, igpu.iommu_group) == ("8086", True, 2)
    assert [d.address for d in facts.iommu_group_members(1)] == ["0000:00:01.0", *CARD]
    assert facts.iommu_enabled is True and "intel_iommu=on" in facts.kernel_cmdline
    assert (facts.boot_loader, facts.cpu_vendor) == ("grub", "intel")


def test_discovery_of_an_iommu_off_host_and_of_proxmox_on_systemd_boot(tmp_path):
    off = trees.facts_of(tmp_path / "off", trees.iommu_off())
    assert off.iommu_enabled is False and off.pci_device("0000:01:00.0").iommu_group is None
    amd = trees.facts_of(tmp_path / "amd", trees.amd_host())
    assert (amd.iommu_enabled, amd.boot_loader, amd.cpu_vendor) == (True, "systemd-boot", "amd")


def test_pci_lines_of_older_discoveries_stay_readable():
    # Before class and boot_vga were read, an empty driver or group was an empty field.
    old = parse_pci_line("0000:01:00.0 0x10de 0x2204  14")
    assert (old.driver, old.iommu_group, old.class_code, old.boot_vga) == (None, 14, None, False)
    new = parse_pci_line("0000:00:02.0 0x8086 0x3e92 - - 0x030000 1")
    assert (new.driver, new.iommu_group, new.class_code, new.boot_vga) == (None, None, "030000", True)
    assert parse_raw("### pci\n0000:01:00.0 0x10de 0x2204 nvidia 14\n").iommu_enabled is None


def test_a_facts_file_from_an_older_discovery_is_read_and_asked_to_be_rediscovered(tmp_path):
    (tmp_path / "gpu1.json").write_text(json.dumps({"pci_devices": [
        {"address": a, "vendor_id": "10de", "device_id": d, "driver": "nvidia", "iommu_group": 14}
        for a, d in zip(CARD, ("2204", "1aef"))]}))
    facts = load_facts(tmp_path, "gpu1", CARD)
    s = _settings()
    assert s.module.preflight(s, facts).problems == [
        "gpu1: the facts file records no IOMMU state (written by an older discovery): run "
        "`provision discover -t kvm -i INVENTORY` again"]


# --- the checks ---------------------------------------------------------------------------------


def test_a_clean_isolated_card_passes_with_a_note(tmp_path):
    result = _check(tmp_path, trees.clean_isolated())
    assert result.problems == []
    assert result.notes == [
        "gpu1: VFIO: 0000:01:00.0 (VGA compatible controller, 10de:2204, driver nvidia), 0000:01:00.1 (Audio device, "
        "10de:1aef, driver snd_hda_intel) in IOMMU group 1 (nothing else but PCI bridges); bound to vfio-pci by "
        "address at boot (driver now: nvidia, snd_hda_intel)"]
    assert result.role_vars == {"vfio_host_kernel_args": ["intel_iommu=on", "iommu=pt"]}


@pytest.mark.parametrize(("host", "intruder"), [
    (trees.shared_with_nic, "0000:03:00.0 (Ethernet controller, 8086:1533, driver igb)"),
    (trees.shared_with_usb, "0000:00:14.0 (USB controller, 8086:a36d, driver xhci_hcd)"),
])
def test_a_group_shared_with_another_device_is_refused_naming_it(tmp_path, host, intruder):
    assert _check(tmp_path, host()).problems == [
        f"gpu1: IOMMU group 1 of the card at 0000:01:00 also holds {intruder}: a VM takes an IOMMU group whole, so "
        "they would leave the host too; put the card in a PCIe slot with a group of its own (a CPU-attached slot; "
        "list the groups with `find /sys/kernel/iommu_groups/ -type l`), or turn ACS on in the firmware setup"]


def test_the_boot_display_is_refused_unless_allowed(tmp_path):
    assert _check(tmp_path / "a", trees.boot_vga()).problems == [
        "gpu1: 0000:01:00.0 is the host's boot display (boot_vga 1): bound to vfio-pci it takes the host's console "
        "with it; make another GPU the primary display in the firmware setup, or set kvm_allow_boot_gpu: true "
        "(the host then has no local console)"]
    assert _check(tmp_path / "b", trees.boot_vga(), kvm_allow_boot_gpu=True).problems == []


def test_two_identical_cards_with_one_listed_pass(tmp_path):
    assert _check(tmp_path, trees.two_identical_cards()).problems == []


def test_the_iommu_off_is_refused_with_the_kernel_arguments_and_the_firmware_switch(tmp_path):
    assert _check(tmp_path, trees.iommu_off()).problems == [
        "gpu1: the IOMMU is off (no IOMMU groups in /sys/kernel/iommu_groups): add intel_iommu=on iommu=pt to the "
        "kernel command line (GRUB_CMDLINE_LINUX_DEFAULT in /etc/default/grub, or /etc/kernel/cmdline and "
        "`proxmox-boot-tool refresh` on Proxmox VE booted by systemd-boot), make sure VT-d is on in the firmware "
        "(BIOS/UEFI) setup, and reboot"]


def test_the_iommu_off_with_its_kernel_argument_given_points_at_the_firmware(tmp_path):
    host = trees.iommu_off()
    host.cmdline += " amd_iommu=on"
    host.cpu = "AuthenticAMD"
    assert _check(tmp_path, host).problems == [
        "gpu1: the IOMMU is off (no IOMMU groups in /sys/kernel/iommu_groups) although the kernel command line has "
        "amd_iommu=on: turn AMD-Vi (IOMMU, with SVM) on in the firmware (BIOS/UEFI) setup and reboot"]


def test_an_amd_host_passes_and_gets_amd_kernel_arguments(tmp_path):
    result = _check(tmp_path, trees.amd_host(), ["0000:0a:00.0", "0000:0a:00.1"])
    assert result.problems == []
    assert result.role_vars == {"vfio_host_kernel_args": ["amd_iommu=on", "iommu=pt"]}


def test_a_missing_function_of_a_four_function_card_is_named(tmp_path):
    listed = ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2"]
    assert _check(tmp_path / "a", trees.turing_four_functions(), listed).problems == [
        "gpu1: kvm_gpu_pci_addresses lists 0000:01:00.0, 0000:01:00.1, 0000:01:00.2 of the card at 0000:01:00 but "
        "not 0000:01:00.3 (Serial bus controller, 10de:1ad7, driver nvidia-gpu): a card passes to a VM with all its "
        "functions; add '0000:01:00.3'"]
    assert _check(tmp_path / "b", trees.turing_four_functions(), [*listed, "0000:01:00.3"]).problems == []


def test_an_absent_address_and_a_non_nvidia_address_are_refused(tmp_path):
    result = _check(tmp_path, trees.clean_isolated(), ["0000:01:00.0", "0000:01:00.1", "0000:05:00.0", "0000:00:14.0"])
    assert result.problems == [
        "gpu1: kvm_gpu_pci_addresses: 0000:05:00.0 does not exist on the host (its NVIDIA functions: 0000:01:00.0, "
        "0000:01:00.1); list the card's functions as `lspci -D -d 10de:` prints them",
        "gpu1: kvm_gpu_pci_addresses: 0000:00:14.0 is not an NVIDIA function but 0000:00:14.0 (USB controller, "
        "8086:a36d, driver xhci_hcd); list only the NVIDIA card's functions (`lspci -D -d 10de:`)"]


def test_an_absent_address_is_refused_even_where_the_facts_loader_assumed_it(tmp_path):
    facts_dir = tmp_path / "facts"
    facts_dir.mkdir()
    facts = trees.facts_of(tmp_path / "root", trees.clean_isolated())
    (facts_dir / "gpu1.json").write_text(facts.model_dump_json())
    listed = [*CARD, "0000:05:00.0"]
    loaded = load_facts(facts_dir, "gpu1", listed)  # fills the unseen address with an assumed RTX 3090
    s = _settings(listed)
    assert any("0000:05:00.0 does not exist on the host" in p for p in s.module.preflight(s, loaded).problems)


def test_assumed_facts_are_not_enough(tmp_path):
    s = _settings()
    assert s.module.preflight(s, load_facts(None, "gpu1", CARD)).problems == [
        "gpu1: no discovered facts for this host, and the VFIO checks read the host's PCI devices and IOMMU groups: "
        "run `provision discover -t kvm -i INVENTORY` (or `provision preflight` without --facts)"]


def test_every_problem_of_a_host_is_listed_and_preflight_exits_6(tmp_path):
    host = trees.boot_vga()
    host.iommu = None
    host.cmdline = "root=/dev/sda1 ro"
    s = _settings(["0000:01:00.0"])
    with pytest.raises(PreflightError) as exc:
        preflight([(s, trees.facts_of(tmp_path, host))])
    lines = exc.value.lines()
    assert exc.value.exit_code == 6
    assert [line.split(":", 2)[1].strip()[:22] for line in lines[:-1]] == [
        "the IOMMU is off (no I", "0000", "kvm_gpu_pci_addresses "]
    assert "0000:01:00.0 is the host's boot display" in lines[1]
    assert lines[-1] == "nothing on any host was changed"


# --- the binding, per address -------------------------------------------------------------------


def _render(tmp_path, facts: HostFacts, addresses=CARD):
    facts_dir = tmp_path / "facts"
    facts_dir.mkdir(exist_ok=True)
    (facts_dir / "gpu1.json").write_text(facts.model_dump_json())
    (result,) = render([_settings(addresses)], tmp_path / "out", facts_dir)
    return result.directory / "host"


def test_the_binding_names_addresses_not_ids(tmp_path):
    host = _render(tmp_path, trees.facts_of(tmp_path / "root", trees.two_identical_cards()))
    modprobe = (host / "etc/modprobe.d/ollama-provisioner-vfio.conf").read_text()
    script = (host / "usr/local/sbin/ollama-provisioner-vfio-bind").read_text()
    assert "ids=" not in modprobe
    assert "install vfio_pci /usr/local/sbin/ollama-provisioner-vfio-bind\n" in modprobe
    assert [line for line in modprobe.splitlines() if line.startswith("softdep")] == [
        f"softdep {d} pre: vfio-pci" for d in ("nvidia", "nouveau", "nvidiafb", "snd_hda_intel")]
    assert "for pair in 0000:01:00.0=0x10de:0x2204 0000:01:00.1=0x10de:0x1aef; do" in script
    assert "0000:02:00" not in script + modprobe


def _run_bind(host_dir, root):
    env = {**os.environ, "VFIO_BIND_SYSFS": str(root / "sys"), "VFIO_BIND_MODPROBE": "echo"}
    proc = subprocess.run(["sh", str(host_dir / "usr/local/sbin/ollama-provisioner-vfio-bind")], env=env,
                          capture_output=True, text=True, check=True)
    overrides = {p.parent.name: p.read_text().strip()
                 for p in (root / "sys/devices/pci0000:00").glob("*/driver_override")}
    return proc.stdout.strip(), {a: v for a, v in overrides.items() if v != "(null)"}


def test_the_rendered_binding_claims_the_listed_card_and_leaves_its_twin_alone(tmp_path):
    root = tmp_path / "root"
    host_dir = _render(tmp_path, trees.facts_of(root, trees.two_identical_cards()))
    loaded, claimed = _run_bind(host_dir, root)
    assert loaded == "--ignore-install vfio-pci"
    assert claimed == {"0000:01:00.0": "vfio-pci", "0000:01:00.1": "vfio-pci"}  # 02:00.x keep their driver


def test_the_binding_claims_nothing_without_iommu_or_where_another_device_now_sits(tmp_path):
    root = tmp_path / "root"
    host_dir = _render(tmp_path, trees.facts_of(root, trees.clean_isolated()))
    (root / "sys/devices/pci0000:00/0000:01:00.1/device").write_text("0x1533\n")  # the bus was renumbered
    assert _run_bind(host_dir, root)[1] == {"0000:01:00.0": "vfio-pci"}
    for unit in (root / "sys/class/iommu").iterdir():
        unit.rmdir()
    (root / "sys/devices/pci0000:00/0000:01:00.0/driver_override").write_text("(null)\n")
    assert _run_bind(host_dir, root)[1] == {}  # IOMMU off: the host keeps its GPU


def test_a_four_function_card_gets_softdeps_for_usb_and_ucsi(tmp_path):
    listed = ["0000:01:00.0", "0000:01:00.1", "0000:01:00.2", "0000:01:00.3"]
    host = _render(tmp_path, trees.facts_of(tmp_path / "root", trees.turing_four_functions()), listed)
    modprobe = (host / "etc/modprobe.d/ollama-provisioner-vfio.conf").read_text()
    for driver in ("xhci_pci", "ucsi_ccg", "i2c_nvidia_gpu"):
        assert f"softdep {driver} pre: vfio-pci" in modprobe


def test_kernel_arguments_go_to_grub_or_to_proxmox_boot_tool(tmp_path):
    grub = _render(tmp_path / "g", trees.facts_of(tmp_path / "g" / "root", trees.clean_isolated()))
    assert 'GRUB_CMDLINE_LINUX_DEFAULT="$GRUB_CMDLINE_LINUX_DEFAULT intel_iommu=on iommu=pt"' in (
        grub / "etc/default/grub.d/ollama-provisioner-iommu.cfg").read_text()
    amd = _render(tmp_path / "a", trees.facts_of(tmp_path / "a" / "root", trees.amd_host()),
                  ["0000:0a:00.0", "0000:0a:00.1"])
    assert not (amd / "etc/default/grub.d").exists()  # systemd-boot: the role edits /etc/kernel/cmdline
    notes = json.loads((amd.parent / "manifest.json").read_text())["notes"]
    assert notes == ["kernel arguments amd_iommu=on iommu=pt are added to /etc/kernel/cmdline (Proxmox VE booted by "
                     "systemd-boot), then `proxmox-boot-tool refresh`"]
