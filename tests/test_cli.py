"""The `provision` CLI over real inventories, loaded by ansible-core's own inventory API."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.cli import app
from tests.conftest import EXAMPLE

NATIVE = """
all:
  children:
    native:
      hosts:
        gpu1: {}
        gpu2: {}
"""


def test_render_example_for_all_targets_writes_every_file(runner, tmp_path):
    result = runner.invoke(app, ["render", "-i", str(EXAMPLE), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    by_target = {h["target"]: h for h in doc["hosts"]}
    assert set(by_target) == {"native", "docker", "lxc", "kvm"}
    for host in doc["hosts"]:
        for f in host["files"]:
            assert Path(f["path"]).is_file()
    assert len(by_target["kvm"]["files"]) == 11
    assert any("RTX 3090" in a for a in by_target["kvm"]["assumptions"])
    assert by_target["native"]["assumptions"] == []


def test_text_output_says_how_to_replace_assumptions(runner, tmp_path):
    result = runner.invoke(app, ["render", "-t", "kvm", "-i", str(EXAMPLE), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert result.output.rstrip().endswith("render again with --facts .provision/facts")


def test_text_output_names_files_and_their_destinations(runner, tmp_path, write_inventory):
    inv = write_inventory(NATIVE)
    result = runner.invoke(app, ["render", "-t", "native", "-i", str(inv), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "native gpu1: 2 files" in result.output
    assert "-> /etc/systemd/system/ollama.service.d/override.conf (copy)" in result.output
    assert "provision discover" not in result.output  # native files rest on no assumption


def test_group_vars_are_templated_and_host_vars_override(runner, tmp_path, write_inventory):
    inv = write_inventory(NATIVE, {
        "group_vars/all.yml": 'ollama_version: "0.12.3"\nollama_context_length: "{{ 2048 * 4 }}"\n',
        "host_vars/gpu2.yml": "ollama_num_parallel: 3\n",
    })
    result = runner.invoke(app, ["render", "-t", "native", "-i", str(inv), "-o", str(tmp_path)])
    assert result.exit_code == 0, result.output
    gpu1 = (tmp_path / "native/gpu1/host/etc/systemd/system/ollama.service.d/override.conf").read_text()
    gpu2 = (tmp_path / "native/gpu2/host/etc/systemd/system/ollama.service.d/override.conf").read_text()
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=8192"' in gpu1
    assert 'Environment="OLLAMA_NUM_PARALLEL=1"' in gpu1
    assert 'Environment="OLLAMA_NUM_PARALLEL=3"' in gpu2


def test_limit_narrows_hosts_as_in_ansible(runner, tmp_path, write_inventory):
    inv = write_inventory(NATIVE)
    result = runner.invoke(app, ["render", "-t", "native", "-i", str(inv), "-o", str(tmp_path), "--limit", "gpu2"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "native/gpu1").exists()
    assert (tmp_path / "native/gpu2/manifest.json").is_file()


def test_bad_value_exits_2_with_one_line_and_writes_nothing(runner, tmp_path, write_inventory):
    inv = write_inventory(NATIVE, {"host_vars/gpu2.yml": "ollama_kv_cache_type: q5\n"})
    result = runner.invoke(app, ["render", "-t", "native", "-i", str(inv), "-o", str(tmp_path / "out")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["error: host 'gpu2': ollama_kv_cache_type = 'q5': Input should be 'f16', 'q8_0' or 'q4_0'"]
    assert not (tmp_path / "out").exists()
    assert "Traceback" not in result.output


def test_broken_yaml_names_file_and_line(runner, tmp_path, write_inventory):
    inv = write_inventory(NATIVE, {"group_vars/all.yml": "ollama_version: 0.12.3\nollama_models: [a, b\n"})
    result = runner.invoke(app, ["render", "-t", "native", "-i", str(inv), "-o", str(tmp_path)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"error: {inv / 'group_vars/all.yml'}:3: broken YAML")


def test_missing_target_group_says_where_hosts_go(runner, tmp_path, write_inventory):
    inv = write_inventory(NATIVE)
    result = runner.invoke(app, ["render", "-t", "kvm", "-i", str(inv), "-o", str(tmp_path)])
    assert result.exit_code == 2
    assert "has no group 'kvm'" in result.output
    assert "all.children.kvm.hosts" in result.output


def test_missing_inventory_is_one_line(runner, tmp_path):
    result = runner.invoke(app, ["render", "-t", "native", "-i", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "does not exist" in result.output


def test_limit_matching_nothing_is_an_error(runner, tmp_path, write_inventory):
    inv = write_inventory(NATIVE)
    result = runner.invoke(app, ["render", "-t", "native", "-i", str(inv), "--limit", "nothere"])
    assert result.exit_code == 2
    assert "no host in group 'native' matching --limit 'nothere'" in result.output


def test_main_flow_renders_then_says_apply_is_not_built(runner, tmp_path, monkeypatch):
    # Every target applies in this version: a target not built yet is made by turning one off.
    from provisioner.targets import Target, get

    monkeypatch.setattr(type(get(Target.kvm)), "apply_ready", False)
    result = runner.invoke(app, ["--target", "kvm", "-i", str(EXAMPLE), "--out", str(tmp_path)])
    assert result.exit_code == 5
    assert "applying target kvm is not built in this version" in result.output
    assert (tmp_path / "kvm/kvm-host/host/libvirt/ollama-vm.xml").is_file()


def test_main_flow_without_target_explains_and_exits_2(runner):
    result = runner.invoke(app, ["-i", str(EXAMPLE)])
    assert result.exit_code == 2
    assert "--target is required" in result.output


@pytest.mark.parametrize("args", [["--help"], ["render", "--help"]])
def test_help_teaches_with_an_example(runner, args):
    result = runner.invoke(app, args)
    assert result.exit_code == 0
    assert "Example" in result.output
    assert "provision render --target" in result.output


def test_token_secret_never_reaches_rendered_files(runner, tmp_path, write_inventory):
    inv = write_inventory("""
    all:
      children:
        lxc:
          hosts:
            pve1:
              lxc_vmid: 130
              lxc_proxmox_api_token_id: "root@pam!prov"
              lxc_proxmox_api_token_secret: "6f1c-secret-abcdef"
    """)
    out = tmp_path / "out"
    result = runner.invoke(app, ["render", "-t", "lxc", "-i", str(inv), "-o", str(out), "--json"])
    assert result.exit_code == 0, result.output
    written = "".join(p.read_text() for p in out.rglob("*") if p.is_file())
    assert "root@pam!prov" in written
    assert "6f1c-secret-abcdef" not in written + result.output


def test_a_vaulted_token_secret_opens_with_ansibles_vault_password_file_and_is_written_nowhere(tmp_path):
    import os
    import subprocess
    import sys

    bin_dir = Path(sys.executable).parent
    (tmp_path / "pw").write_text("vault-pw-for-the-test\n")
    secret = "d3c1a9e0-7b2f-4c5e-8a6d-1f0e9b8c7a65"
    vaulted = subprocess.run([str(bin_dir / "ansible-vault"), "encrypt_string", "--vault-password-file",
                              str(tmp_path / "pw"), secret, "--name", "lxc_proxmox_api_token_secret"],
                             capture_output=True, text=True, check=True).stdout
    inv = tmp_path / "hosts.yml"
    inv.write_text("all:\n  children:\n    lxc:\n      hosts:\n        pve1:\n          lxc_vmid: 120\n"
                   "          lxc_proxmox_api_token_id: 'prov@pve!ci'\n"
                   + "".join(f"          {line}\n" for line in vaulted.splitlines()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_VAULT")}
    cmd = [str(bin_dir / "provision"), "render", "-t", "lxc", "-i", str(inv), "--out", str(tmp_path / "out")]
    without = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert without.returncode == 2
    assert "ANSIBLE_VAULT_PASSWORD_FILE" in without.stderr and len(without.stderr.strip().splitlines()) == 1
    ok = subprocess.run(cmd, env={**env, "ANSIBLE_VAULT_PASSWORD_FILE": str(tmp_path / "pw")},
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    manifest = (tmp_path / "out" / "lxc" / "pve1" / "manifest.json").read_text()
    assert '"lxc_proxmox_api_token_secret": "********"' in manifest
    for path in (tmp_path / "out").rglob("*"):
        assert not path.is_file() or secret not in path.read_text(), path
    assert secret not in ok.stdout + ok.stderr


# --- uninstall --revert-host ------------------------------------------------------------------


class _RecordingRunner:
    """Stands in for ansible-runner in `provision uninstall`: records each run, changes 2 things per host."""

    def __init__(self, workspace, inventory, display) -> None:
        from provisioner.progress import Quiet

        self.display = Quiet()
        self.workspace = workspace
        self.calls: list[dict] = []
        self.run_dirs: list[Path] = []

    def run(self, playbook, *, limit=None, extravars=None, check=False, diff=False):
        from provisioner.runner import RunResult

        self.calls.append({"playbook": playbook, "extravars": extravars or {}, "check": check})
        run_dir = self.workspace.new_run_dir(Path(playbook).stem)
        self.run_dirs.append(run_dir)
        return RunResult(playbook, "successful", 0, run_dir, {"changed": {"kvm-host": 2}})


@pytest.fixture
def recording_runners(monkeypatch, tmp_path):
    """`provision uninstall` with _RecordingRunner in place of ansible-runner; the runners it made."""
    from provisioner import flow

    made: list[_RecordingRunner] = []

    def factory(workspace, inventory, display):
        made.append(_RecordingRunner(workspace, inventory, display))
        return made[-1]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flow, "AnsibleRunner", factory)
    return made


@pytest.mark.parametrize("target", ["native", "docker", "lxc"])
def test_revert_host_on_a_target_without_host_preparation_is_one_line_and_exit_2(runner, recording_runners, target):
    result = runner.invoke(app, ["uninstall", "--target", target, "-i", str(EXAMPLE), "--revert-host"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"error: --revert-host reverts a host's VFIO preparation, which only --target kvm makes; target {target} "
        "prepares none: leave --revert-host out (nothing was changed)"]
    assert recording_runners == []  # refused before a runner exists, so before anything ran


def test_revert_host_refused_with_json_is_still_a_document(runner, recording_runners):
    result = runner.invoke(app, ["uninstall", "-t", "native", "-i", str(EXAMPLE), "--revert-host", "--json"])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert doc["command"] == "uninstall" and doc["steps"] == [] and "--revert-host" in doc["error"]


def test_revert_host_asks_the_kvm_playbook_to_revert_with_the_host_s_vfio_variables(runner, recording_runners):
    result = runner.invoke(app, ["uninstall", "--target", "kvm", "-i", str(EXAMPLE), "--revert-host"])
    assert result.exit_code == 0, result.output
    ((call,),) = [r.calls for r in recording_runners]
    assert call["playbook"] == "kvm.yml"
    extravars = call["extravars"]
    assert extravars["vfio_host_state"] == "absent"
    assert extravars["ollama_service_state"] == "absent" and extravars["kvm_vm_destroy"] is False
    # The play on the host reads these (nothing is rendered on uninstall): the reboot switch comes along.
    host_vars = json.loads((Path(extravars["provision_rendered_dir"]) / "kvm-host/host-vars.json").read_text())
    assert host_vars["vfio_host_allow_reboot"] is False
    assert host_vars["vfio_host_pci_addresses"] == ["0000:01:00.0", "0000:01:00.1"]
    assert "removed Ollama from kvm-host: 2 change(s)" in result.output
    assert "the host's VFIO preparation was reverted" in result.output and "at the next boot" in result.output


def test_without_revert_host_the_host_s_vfio_preparation_is_kept_and_said_so(runner, recording_runners):
    result = runner.invoke(app, ["uninstall", "--target", "kvm", "-i", str(EXAMPLE), "--destroy"])
    assert result.exit_code == 0, result.output
    ((call,),) = [r.calls for r in recording_runners]
    assert "vfio_host_state" not in call["extravars"] and call["extravars"]["kvm_vm_destroy"] is True
    assert "the host's VFIO preparation, if any, was kept (--revert-host reverts it)" in result.output


def test_the_kvm_playbook_reverts_the_host_only_when_asked_and_after_the_guest():
    import yaml

    from tests.conftest import ROOT

    plays = yaml.safe_load((ROOT / "playbooks/kvm.yml").read_text())
    names = [p.get("name") for p in plays]
    revert = plays[-1]
    assert names.index("Install Ollama where each host runs it") < len(plays) - 1
    (include,) = [t for t in revert["tasks"] if t.get("ansible.builtin.include_role")]
    assert include["ansible.builtin.include_role"]["name"] == "vfio_host"
    assert include["when"] == "vfio_host_state | default('present') == 'absent'"
    # The preparation itself stays conditional on an install.
    (prepare,) = [t for t in plays[0]["tasks"] if t.get("name") == "Prepare the host's GPU functions for VFIO"]
    assert "__present" in prepare["when"]
