"""The whole flow against a fake runner: the seam at the one place Ansible runs.

The fake does what the real playbooks do at the controller's side of the seam: discover
writes each host's raw facts (the gpu_facts role's format), the target's playbook
reports changes, verify writes each host's evidence document (the ollama_verify role's,
recorded from a real run). What it cannot prove: that the playbooks themselves work;
tests/test_native.py runs them for real.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner import flow
from provisioner.cli import app
from provisioner.errors import ApplyError, PreflightError
from provisioner.progress import Failure, Quiet
from provisioner.runner import RunResult, apply_error
from provisioner.targets import Target
from provisioner.workspace import Workspace
from tests.conftest import ROOT

RECORDED = json.loads((ROOT / "tests/fixtures/role-evidence-native-cpu.json").read_text())
RAW_NO_GPU = """### proc_devices
Character devices:
  1 mem
### nodes
### driver
### smi
### groups
video:x:44:
### pci
0000:00:01.0 0x8086 0x1237
### cpuinfo
vendor_id\t: GenuineIntel
flags\t\t: fpu sse4_2 avx avx2
### cgroup
cgroup2fs
cpu memory
### proxmox
"""
RAW_OLD_DRIVER = RAW_NO_GPU.replace(
    "### driver\n", "### driver\nNVRM version: NVIDIA UNIX x86_64 Kernel Module  535.183.01  Sun May 12 2024\n"
).replace("0000:00:01.0 0x8086 0x1237", "0000:01:00.0 0x10de 0x2204 nvidia 12")


class FakeRunner:
    """Records every playbook run and plays the controller's side of each."""

    def __init__(self, workspace: Workspace, raw: str = RAW_NO_GPU, fail: str | None = None) -> None:
        self.workspace = workspace
        self.display = Quiet()
        self.raw = raw
        self.fail = fail
        self.calls: list[dict] = []
        self.run_dirs: list[Path] = []

    def run(self, playbook, *, limit=None, extravars=None, check=False, diff=False) -> RunResult:
        extravars = extravars or {}
        self.calls.append({"playbook": playbook, "limit": limit, "extravars": extravars, "check": check, "diff": diff})
        run_dir = self.workspace.new_run_dir(Path(playbook).stem)
        self.run_dirs.append(run_dir)
        names = limit.split(",")[:-1] if limit else extravars.get("provision_places") or ["gpu1", "gpu2"]
        hosts = list(names)
        if playbook == "discover.yml":
            for host in hosts:
                (Path(extravars["gpu_facts_dir"]) / f"{host}.raw").write_text(self.raw)
        elif playbook == "verify.yml":
            for host, plan in extravars["provision_verify"].items():
                doc = {**RECORDED, "host": host, "model": plan["model"], "url": plan["api_url"]}
                (Path(extravars["provision_evidence_dir"]) / f"{host}.json").write_text(json.dumps(doc))
        run = RunResult(playbook, "successful", 0, run_dir, {"changed": {h: 3 for h in hosts}})
        if playbook == self.fail:
            run.status, run.rc = "failed", 2
            run.failures = [Failure(hosts[0], "Install the rendered drop-in with the server's settings", "disk full")]
            raise apply_error(playbook, run)
        return run


INVENTORY = """
all:
  children:
    native:
      hosts:
        gpu1: {}
        gpu2: {ollama_context_length: 8192}
  vars:
    ollama_version: 0.12.3
    ollama_models: [smollm2]
"""


@pytest.fixture
def inv(write_inventory):
    return write_inventory(INVENTORY)


@pytest.fixture
def workspace(tmp_path):
    return Workspace(tmp_path / "state")


def _flow(inv, workspace, runner, **kw):
    return flow.run_flow(target=Target.native, inventory=inv, workspace=workspace, display=runner.display,
                         runner=runner, **kw)


def test_the_steps_run_in_order_with_the_variables_each_playbook_needs(inv, workspace):
    runner = FakeRunner(workspace)
    result = _flow(inv, workspace, runner)

    assert [c["playbook"] for c in runner.calls] == ["discover.yml", "native.yml", "verify.yml"]
    assert result.steps == ["validate", "discover", "preflight", "render", "apply", "verify"]
    discover, apply, verify = (c["extravars"] for c in runner.calls)
    assert discover == {"provision_group": "native", "gpu_facts_dir": str(workspace.facts.resolve())}
    rendered = workspace.rendered("native").resolve()
    assert apply["provision_group"] == "native" and apply["provision_rendered_dir"] == str(rendered)
    assert apply["provision_places"] == {
        h: {"name": h, "description": f"the host {h} itself", "service_scope": "host"} for h in ("gpu1", "gpu2")}
    assert verify["provision_places"] == apply["provision_places"]
    assert verify["provision_verify"]["gpu2"] == {
        "model": "smollm2", "api_url": "http://127.0.0.1:11434", "num_predict": 64,
        "log_command": "journalctl -u ollama --no-pager -o cat --since",
        "env_command": "systemctl show ollama -p Environment --value", "exec": "", "inspect_command": ""}

    # One name per value: the role reads its own names, written from the inventory's.
    service = json.loads((rendered / "gpu2/service-vars.json").read_text())
    assert service["ollama_service_version"] == "0.12.3"
    assert service["ollama_service_models"] == [{"name": "smollm2", "insecure": False}]
    assert json.loads((rendered / "gpu2/host-vars.json").read_text()) == {
        "nvidia_host_install": False, "nvidia_host_allow_reboot": False}
    dropin = (rendered / "gpu2/host/etc/systemd/system/ollama.service.d/override.conf").read_text()
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=8192"' in dropin

    # No GPU in the facts: installed for CPU, and 100% CPU is the expected verdict.
    gpu1 = result.host("gpu1")
    assert gpu1.changes == 3 and gpu1.answers_at == "http://127.0.0.1:11434"
    assert any("no NVIDIA GPU found" in note for note in gpu1.preflight)
    assert gpu1.verdict.verdict == "cpu" and gpu1.verdict.expected == "cpu" and result.exit_code == 0
    assert [Path(d).name.split("-", 2)[2] for d in result.run_dirs] == ["discover", "native", "verify"]


def test_a_failed_apply_stops_before_verify_and_says_what_failed_where(inv, workspace):
    runner = FakeRunner(workspace, fail="native.yml")
    with pytest.raises(ApplyError) as err:
        _flow(inv, workspace, runner)
    assert [c["playbook"] for c in runner.calls] == ["discover.yml", "native.yml"]
    result = err.value.result
    assert result.steps == ["validate", "discover", "preflight", "render"]
    assert result.exit_code == 4 and "native.yml failed on gpu1" in result.error
    assert [(e.host, e.message) for e in result.host("gpu1").errors] == [("gpu1", "disk full")]
    assert result.host("gpu2").errors == [] and result.host("gpu1").verdict is None
    assert result.host("gpu1").changes == 3  # what the failed run changed before it stopped


def test_a_refused_host_stops_before_anything_changes(inv, workspace):
    runner = FakeRunner(workspace, raw=RAW_OLD_DRIVER)
    with pytest.raises(PreflightError) as err:
        _flow(inv, workspace, runner)
    assert [c["playbook"] for c in runner.calls] == ["discover.yml"]
    assert "535.183.01 is older than Ollama's minimum 550" in err.value.message
    assert err.value.result.steps == ["validate", "discover"]
    assert "older than Ollama's minimum 550" in err.value.result.host("gpu2").preflight[0]
    assert len(err.value.details) == 2 and err.value.result.details == err.value.details  # gpu2's line, "nothing changed"
    assert not workspace.rendered("native").exists()


def test_a_dry_run_applies_in_check_mode_and_does_not_verify(inv, workspace):
    runner = FakeRunner(workspace)
    result = _flow(inv, workspace, runner, check=True, diff=True)
    assert [(c["playbook"], c["check"], c["diff"]) for c in runner.calls] == [
        ("discover.yml", False, False), ("native.yml", True, True)]
    assert result.steps[-1] == "apply" and result.verdicts == []


def test_given_facts_are_read_and_discovery_is_skipped(inv, tmp_path):
    facts = tmp_path / "facts"
    facts.mkdir()
    for host in ("gpu1", "gpu2"):
        (facts / f"{host}.json").write_text(json.dumps({"pci_devices": []}))
    workspace = Workspace(tmp_path / "state", facts_dir=facts)
    runner = FakeRunner(workspace)
    result = _flow(inv, workspace, runner, facts_given=True)
    assert [c["playbook"] for c in runner.calls] == ["native.yml", "verify.yml"]
    assert "discover" not in result.steps


def test_uninstall_renders_nothing_and_asks_the_role_to_remove(inv, workspace):
    runner = FakeRunner(workspace)
    result = flow.run_uninstall(target=Target.native, inventory=inv, workspace=workspace, purge=True,
                                display=runner.display, runner=runner)
    (call,) = runner.calls
    assert call["playbook"] == "native.yml"
    assert call["extravars"]["ollama_service_state"] == "absent" and call["extravars"]["ollama_service_purge"] is True
    assert not workspace.rendered("native").exists()
    role_vars = Path(call["extravars"]["provision_rendered_dir"])
    assert json.loads((role_vars / "gpu1/service-vars.json").read_text())["ollama_service_models_dir"] == \
        "/usr/share/ollama/.ollama/models"
    assert result.steps == ["validate", "uninstall"] and result.host("gpu2").changes == 3


def test_a_limit_is_the_resolved_hosts_plus_their_places(write_inventory, workspace):
    inv = write_inventory(INVENTORY.replace("gpu2: {ollama_context_length: 8192}", "gpu2: {}\n        gpu3: {}"))
    runner = FakeRunner(workspace)
    _flow(inv, workspace, runner, limit="!gpu2")
    # The pattern is resolved once (Ansible would read "!gpu2,x" as "no hosts"); places' group added.
    assert {c["limit"] for c in runner.calls} == {"gpu1,gpu3,provision_places"}


def test_run_directories_are_unique_within_the_same_second(workspace):
    made = {workspace.new_run_dir("native") for _ in range(5)}
    assert len(made) == 5


@pytest.fixture
def fake_cli(monkeypatch, tmp_path):
    """The CLI with the fake runner in place of ansible-runner; returns the runners it made."""
    made: list[FakeRunner] = []

    def factory(workspace, inventory, display, **kw):
        made.append(FakeRunner(workspace, **kw))
        return made[-1]

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flow, "AnsibleRunner", factory)
    return made


def test_json_is_one_document_on_stdout_with_progress_on_stderr(runner, inv, fake_cli):
    result = runner.invoke(app, ["--target", "native", "-i", str(inv), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["target"] == "native" and doc["steps"][-1] == "verify" and doc["exit_code"] == 0
    assert [h["host"] for h in doc["hosts"]] == ["gpu1", "gpu2"]
    assert doc["hosts"][0]["verdict"]["models"][0]["processor_text"] == "100% CPU"
    assert "validated 2 host(s)" in result.stderr


def test_json_of_a_failed_run_still_names_host_task_and_message(runner, inv, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(flow, "AnsibleRunner", lambda ws, inventory, display: FakeRunner(ws, fail="native.yml"))
    result = runner.invoke(app, ["--target", "native", "-i", str(inv), "--json"])
    assert result.exit_code == 4
    doc = json.loads(result.stdout)
    assert doc["exit_code"] == 4 and doc["hosts"][0]["errors"] == [
        {"host": "gpu1", "task": "Install the rendered drop-in with the server's settings", "message": "disk full"}]
    assert "error: native.yml failed on gpu1" in result.stderr


def test_json_of_a_run_refused_at_validation_is_a_document_too(runner, write_inventory, fake_cli):
    inv = write_inventory(INVENTORY.replace("gpu1: {}", "gpu1: {ollama_num_parallel: 0}"))
    result = runner.invoke(app, ["--target", "native", "-i", str(inv), "--json"])
    assert result.exit_code == 2 and fake_cli == []
    doc = json.loads(result.stdout)
    assert doc["steps"] == [] and doc["hosts"] == [] and "ollama_num_parallel = 0" in doc["error"]


def test_changes_and_failures_at_a_place_belong_to_its_host():
    from provisioner.settings import build_settings

    hosts = [build_settings("pve1", Target.lxc, {"lxc_vmid": 120})]
    place = hosts[0].module.place(hosts[0]).name
    result = flow.FlowResult("provision", Target.lxc, hosts=[flow.HostResult("pve1", "lxc")])
    run = RunResult("lxc.yml", "failed", 2, Path("/x"), {"changed": {"pve1": 1, place: 4}},
                    [Failure(place, "Install the rendered unit", "no space")])
    error = flow._failed(result, apply_error("lxc.yml", run), hosts, None)
    assert error.result.host("pve1").changes == 5
    assert [(e.host, e.task) for e in error.result.host("pve1").errors] == [("pve1", "Install the rendered unit")]


@pytest.mark.parametrize("args", [
    ["-t", "native", "-i", "INV", "verify"],
    ["--check", "uninstall", "-t", "native", "-i", "INV"],
])
def test_options_before_a_subcommand_that_would_ignore_them_are_refused(runner, inv, args):
    result = runner.invoke(app, [str(inv) if a == "INV" else a for a in args])
    assert result.exit_code == 2
    assert "would be ignored: put" in result.output and "after the subcommand" in result.output


def test_version(runner):
    from provisioner import __version__

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"provision {__version__}"
