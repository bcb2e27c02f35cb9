"""The roles' probe modules are JSON-args modules (Ansible's module replacer writes the task's
arguments into them as JSON): run here through Ansible itself, on this machine, with arguments
that would break a careless substitution (quotes, backslashes, a triple quote, non-ASCII).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

LIBRARY = os.pathsep.join(str(ROOT / "roles" / r / "library") for r in ("lxc_container", "ollama_service"))
TRICKY = 'Managed by "ollama-provisioner" \'\'\' """ \\ \\" é'


def _play(tmp_path: Path, tasks: list[dict]) -> dict:
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks}]
    (tmp_path / "play.yml").write_text(json.dumps(play))
    env = {**os.environ, "ANSIBLE_LIBRARY": LIBRARY, "ANSIBLE_PIPELINING": "True", "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_LOCALHOST_WARNING": "False"}
    proc = subprocess.run([Path(sys.executable).parent / "ansible-playbook", "-i", "localhost,", "-c", "local",
                           "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
                          capture_output=True, text=True, env=env, timeout=120)
    out = json.loads(proc.stdout)
    return {t["task"]["name"]: t["hosts"]["localhost"] for t in out["plays"][0]["tasks"]}


def test_the_probes_read_their_arguments_whatever_they_hold_and_refuse_missing_ones(tmp_path):
    lxc = tmp_path / "lxc"
    (lxc / "ct" / "rootfs" / "etc").mkdir(parents=True)
    (lxc / "ct" / "rootfs" / "etc" / "os-release").write_text("ID=debian\n")
    config = f"# {TRICKY}\nlxc.rootfs.path = dir:{lxc}/ct/rootfs\n"
    (lxc / "ct" / "config").write_text(config)
    results = _play(tmp_path, [
        {"name": "ours", "lxc_container_probe": {"name": "ct", "path": str(lxc), "mark": TRICKY}},
        {"name": "not ours", "lxc_container_probe": {"name": "ct", "path": str(lxc), "mark": TRICKY + "x"}},
        {"name": "absent", "lxc_container_probe": {"name": "nothing", "path": str(lxc), "mark": "m"}},
        {"name": "no mark", "lxc_container_probe": {"name": "ct"}, "ignore_errors": True},
        {"name": "service", "ollama_service_probe": {
            "install_root": str(tmp_path / "root"), "version": "0.0.0", "user": "nobody-" + TRICKY[:3],
            "models_dir": str(tmp_path / "models"), "home": "~/none", "api_url": "http://127.0.0.1:9"}},
        {"name": "service, a typo", "ollama_service_probe": {"install_rot": "/x"}, "ignore_errors": True},
    ])
    ours = results["ours"]["container"]
    assert ours["exists"] and ours["ours"] and ours["rootfs"]
    assert ours["config_sha256"] == hashlib.sha256(config.encode()).hexdigest()
    assert results["not ours"]["container"]["ours"] is False
    assert results["absent"]["container"]["exists"] is False and results["absent"]["changed"] is False
    assert results["no mark"]["failed"] and "missing ['mark']" in results["no mark"]["msg"]
    state = results["service"]["state"]
    assert state["version_installed"] is False and state["user_exists"] is False and state["server_version"] is None
    assert state["models"] is None and state["loaded"] == []
    typo = results["service, a typo"]
    assert typo["failed"] and "unsupported ['install_rot']" in typo["msg"]


def test_the_container_probe_names_the_process_that_holds_a_port_and_ignores_other_addresses(tmp_path):
    # A real listening socket of this process, read back through the module run by Ansible. No
    # container, image or compose file of these names exists here: each is reported absent.
    import socket

    def probe(address: str, port: int) -> dict:
        return {"ollama_container_probe": {
            "name": "ollama-provisioner-no-such-container", "image": "ollama-provisioner/no-such-image:0",
            "compose_file": str(tmp_path / "compose.yaml"), "address": address, "port": port,
            "api_url": "http://127.0.0.1:9"}}

    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        play = [{"hosts": "localhost", "gather_facts": False, "tasks": [
            {"name": "same", **probe("127.0.0.1", port)},
            {"name": "wildcard", **probe("0.0.0.0", port)},
            {"name": "other address", **probe("127.0.0.2", port)},
            {"name": "free", **probe("127.0.0.1", 9)},
        ]}]
        (tmp_path / "play.yml").write_text(json.dumps(play))
        env = {**os.environ, "ANSIBLE_LIBRARY": str(ROOT / "roles" / "ollama_container" / "library"),
               "ANSIBLE_NOCOLOR": "1", "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json",
               "ANSIBLE_LOCALHOST_WARNING": "False"}
        proc = subprocess.run([Path(sys.executable).parent / "ansible-playbook", "-i", "localhost,", "-c", "local",
                               "-e", f"ansible_python_interpreter={sys.executable}", str(tmp_path / "play.yml")],
                              capture_output=True, text=True, env=env, timeout=120)
        tasks = {t["task"]["name"]: t["hosts"]["localhost"] for t in json.loads(proc.stdout)["plays"][0]["tasks"]}
    (same,) = tasks["same"]["listeners"]
    assert same["pid"] == os.getpid() and same["text"] == f"{same['command']} (pid {os.getpid()}) on 127.0.0.1:{port}"
    assert [x["pid"] for x in tasks["wildcard"]["listeners"]] == [os.getpid()]
    assert tasks["other address"]["listeners"] == [] and tasks["free"]["listeners"] == []
    assert tasks["same"]["container"] is None and tasks["same"]["image"] is None and tasks["same"]["compose_sha256"] is None and tasks["same"]["models"] is None
    assert not any(t["changed"] for t in tasks.values())
