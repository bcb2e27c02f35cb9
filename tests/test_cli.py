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
