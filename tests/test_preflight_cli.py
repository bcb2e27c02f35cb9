"""`provision preflight`: the checks alone, read-only, from recorded facts (--facts) or after discovery."""

from __future__ import annotations

import json

import pytest

from provisioner.cli import app
from tests import sysfs_tree as trees

HOSTS = """\
all:
  children:
    kvm:
      hosts:
        good:
          ansible_host: 192.0.2.21
        shared:
          ansible_host: 192.0.2.22
  vars:
    kvm_gpu_pci_addresses: ["0000:01:00.0", "0000:01:00.1"]
"""


@pytest.fixture
def facts_dir(tmp_path):
    """The recorded facts of two kvm hosts: a clean isolated card, and one sharing its group with a NIC."""
    facts = tmp_path / "facts"
    facts.mkdir()
    for host, tree in (("good", trees.clean_isolated()), ("shared", trees.shared_with_nic())):
        found = trees.facts_of(tmp_path / host, tree)
        (facts / f"{host}.json").write_text(found.model_dump_json(exclude={"assumptions", "source"}))
    return facts


def _invoke(runner, tmp_path, monkeypatch, *args):
    monkeypatch.chdir(tmp_path)
    return runner.invoke(app, [str(a) for a in args])


def test_a_refused_host_exits_6_with_one_line_naming_host_and_fix(runner, tmp_path, monkeypatch, write_inventory,
                                                                   facts_dir):
    inv = write_inventory(HOSTS)
    result = _invoke(runner, tmp_path, monkeypatch, "preflight", "-t", "kvm", "-i", inv, "--facts", facts_dir)
    assert result.exit_code == 6, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith(("error:", "       "))]
    assert errors[0].startswith("error: shared: IOMMU group 1 of the card at 0000:01:00 also holds 0000:03:00.0 "
                                "(Ethernet controller, 8086:1533, driver igb)")
    assert "turn ACS on in the firmware setup" in errors[0]
    assert errors[1:] == ["       nothing on any host was changed"]
    assert "preflight: good: VFIO: 0000:01:00.0 (VGA compatible controller" in result.stderr
    assert not (tmp_path / ".provision" / "runs").exists()  # no Ansible run: the hosts were not reached


def test_json_carries_every_host_and_the_exit_code(runner, tmp_path, monkeypatch, write_inventory, facts_dir):
    inv = write_inventory(HOSTS)
    result = _invoke(runner, tmp_path, monkeypatch, "preflight", "-t", "kvm", "-i", inv, "--facts", facts_dir, "--json")
    assert result.exit_code == 6
    doc = json.loads(result.stdout)
    assert (doc["command"], doc["target"], doc["steps"], doc["exit_code"]) == ("preflight", "kvm",
                                                                               ["validate", "preflight"], 6)
    by_host = {h["host"]: h["preflight"] for h in doc["hosts"]}
    assert by_host["good"][0].startswith("good: VFIO: 0000:01:00.0")
    assert by_host["shared"][0].startswith("shared: IOMMU group 1 of the card at 0000:01:00 also holds")
    assert doc["error"] == by_host["shared"][0]


def test_every_host_passing_exits_0_and_prints_its_notes(runner, tmp_path, monkeypatch, write_inventory, facts_dir):
    inv = write_inventory(HOSTS)
    result = _invoke(runner, tmp_path, monkeypatch, "preflight", "-t", "kvm", "-i", inv, "--facts", facts_dir,
                     "--limit", "good")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[-1] == "good: passes the kvm preflight (nothing was changed)"
    assert result.stdout.startswith("good: VFIO: 0000:01:00.0 (VGA compatible controller, 10de:2204, driver nvidia)")


def test_other_targets_get_their_own_preflight(runner, tmp_path, monkeypatch, write_inventory):
    inv = write_inventory("all:\n  children:\n    native:\n      hosts:\n        ws:\n          ansible_host: 192.0.2.9\n")
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "ws.json").write_text(json.dumps({"nvidia_driver_version": "535.183.01", "pci_devices": [
        {"address": "0000:01:00.0", "vendor_id": "10de", "device_id": "2204"}]}))
    result = _invoke(runner, tmp_path, monkeypatch, "preflight", "-t", "native", "-i", inv, "--facts", facts)
    assert result.exit_code == 6
    assert "error: ws: NVIDIA driver 535.183.01 is older than Ollama's minimum 550" in result.stderr


def test_bad_input_stops_before_any_check(runner, tmp_path, monkeypatch, write_inventory, facts_dir):
    inv = write_inventory(HOSTS.replace('"0000:01:00.1"', '"01:00.1"'))
    result = _invoke(runner, tmp_path, monkeypatch, "preflight", "-t", "kvm", "-i", inv, "--facts", facts_dir)
    assert result.exit_code == 2
    assert "kvm_gpu_pci_addresses" in result.stderr and "01:00.1" in result.stderr


def test_without_facts_the_hosts_are_discovered_first(runner, tmp_path, monkeypatch, write_inventory, facts_dir):
    from provisioner import discover

    seen = {}

    def fake_discover(workspace, runner_, hosts, *, limit=None):
        seen["hosts"] = [h.host for h in hosts]
        workspace.facts.mkdir(parents=True, exist_ok=True)
        for f in facts_dir.iterdir():
            (workspace.facts / f.name).write_text(f.read_text())
        return {}

    monkeypatch.setattr(discover, "discover", fake_discover)
    inv = write_inventory(HOSTS)
    result = _invoke(runner, tmp_path, monkeypatch, "preflight", "-t", "kvm", "-i", inv, "--json")
    assert seen["hosts"] == ["good", "shared"]
    assert result.exit_code == 6 and json.loads(result.stdout)["steps"] == ["validate", "discover", "preflight"]


def test_help_teaches_with_an_example(runner):
    result = runner.invoke(app, ["preflight", "--help"])
    assert result.exit_code == 0
    assert "provision preflight -t kvm -i inventories/homelab --facts .provision/facts" in result.output
    assert "6 a host is refused" in result.output
