"""The lxc target on Proxmox VE, end to end, against a double and a stand-in (no Proxmox runs here).

- The API: tests/pve_double.py, a strict double of the PVE 9.1 API, driven by the real proxmoxer
  client inside the project's pve_container module, over HTTPS with its own CA.
- The node: tests/pve_node.py, a systemd container reached over real SSH, with a `pct` stand-in
  that edits /etc/pve/lxc/<vmid>.conf, the same file the double serves (pmxcfs). Its `pct exec`
  runs on the node stand-in itself: Ollama is installed and verified there, through the real
  community.proxmox.proxmox_pct_remote connection.
What this cannot prove is in both modules' docstrings and in the README.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.native_host import DOCKER_HOST_IP, MODEL_FILE, VERSION_A, www_server
from tests.pve_double import PVEDouble
from tests.pve_node import pve_node
from tests.test_pve_container import token_acl

pytestmark = [pytest.mark.infra, pytest.mark.slow]

ROOT = Path(__file__).resolve().parent.parent
TOKEN, SECRET = "prov@pve!ci", "7e2d4c1a-9b3f-4a8e-b6d5-0c1f2e3a4b5c"
VMID = 120
ACL = token_acl(VMID)


@pytest.fixture(scope="module")
def www():
    with www_server(DOCKER_HOST_IP) as url:
        yield url


@pytest.fixture
def pve(tmp_path):
    """The API double and the node stand-in sharing one /etc/pve."""
    etc_pve = tmp_path / "etc-pve"
    with PVEDouble(task_seconds=0.1, auth_failure_delay=0, config_dir=etc_pve) as double, \
            pve_node(node="pve", config_dir=etc_pve) as node:
        double.add_token(TOKEN, SECRET, privsep=True, acl=ACL)
        yield double, node
        assert double.internal_errors == []


def write_inventory(directory: Path, double: PVEDouble, node, www: str, **variables) -> Path:
    host = {
        **node.inventory_vars(),
        "lxc_backend": "proxmox",
        "lxc_vmid": VMID,
        "lxc_proxmox_node": "pve",
        "lxc_proxmox_api_host": double.host,
        "lxc_proxmox_api_port": double.port,
        "lxc_proxmox_ca_cert": double.ca_path,
        "lxc_proxmox_api_token_id": TOKEN,
        "lxc_proxmox_api_token_secret": SECRET,
        "ollama_version": VERSION_A,
        "ollama_archive": f"{www}/ollama-linux-amd64.tgz",
        "ollama_models": [{"name": "smollm2", "from": f"{www}/{MODEL_FILE}"}],
        **variables,
    }
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "hosts.yml").write_text(json.dumps({"all": {"children": {"lxc": {"hosts": {"pve": host}}}}}))
    return directory


def test_proxmox_container_created_through_the_api_ollama_inside_verified_rerun_unchanged_destroyed(
        pve, www, tmp_path, provision):
    double, node = pve
    inv = write_inventory(tmp_path / "inv", double, node, www)
    first = provision("--target", "lxc", "-i", inv)
    assert first.exit_code == 0, first.output
    ct = double.containers[VMID]
    assert ct.status == "running"
    assert ct.config["tags"] == "ollama-provisioner"
    assert ct.config["description"].startswith("Managed by ollama-provisioner")
    # The file the node sees is the one the API wrote (pmxcfs): the mark is its first line.
    assert node.conf(VMID).startswith("#Managed by ollama-provisioner")
    assert "100% CPU" in first.output and "expected" in first.output
    # Ollama was installed through `pct exec` on the node.
    assert node.exec("systemctl", "is-active", "ollama").stdout.strip() == "active"
    tasks = [t.type for t in double.tasks]
    assert tasks == ["vzcreate", "vzstart"], tasks
    # The secret went to the module as a no_log argument and nowhere else.
    for path in (tmp_path / ".provision").rglob("*"):
        if path.is_file():
            assert SECRET not in path.read_text(errors="replace"), path
    assert SECRET not in first.output

    second = provision("--target", "lxc", "-i", inv)
    assert second.exit_code == 0, second.output
    assert "changed 0" in second.output, second.output
    assert [t.type for t in double.tasks] == ["vzcreate", "vzstart"]

    # Uninstall keeps the container and the models; --destroy destroys it through the API.
    kept = provision("uninstall", "--target", "lxc", "-i", inv)
    assert kept.exit_code == 0, kept.output
    assert VMID in double.containers and double.containers[VMID].status == "running"
    assert node.exec("systemctl", "is-active", "ollama").stdout.strip() != "active"
    gone = provision("uninstall", "--target", "lxc", "-i", inv, "--destroy")
    assert gone.exit_code == 0, gone.output
    assert VMID not in double.containers
    assert not (node.config_dir / "nodes" / "pve" / "lxc" / f"{VMID}.conf").exists()


def test_a_foreign_vmid_is_refused_before_the_node_changes(pve, www, tmp_path, provision):
    double, node = pve
    double.add_container(VMID, {"hostname": "nextcloud", "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
                                "rootfs": "local-lvm:vm-120-disk-0,size=8G", "memory": 2048}, status="running")
    before = node.conf(VMID)
    inv = write_inventory(tmp_path / "inv", double, node, www)
    result = provision("--target", "lxc", "-i", inv)
    assert result.exit_code == 4, result.output
    assert f"CT {VMID} on node 'pve' (hostname 'nextcloud') was not created by ollama-provisioner" in result.output
    assert "nothing was changed" in result.output
    assert node.conf(VMID) == before
    assert double.containers[VMID].status == "running"
    assert not [r for r in double.requests if r.method in ("POST", "PUT", "DELETE")]


def test_no_credential_stops_at_preflight(pve, www, tmp_path, provision, monkeypatch):
    double, node = pve
    for var in ("PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET", "PROXMOX_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    inv = write_inventory(tmp_path / "inv", double, node, www, lxc_proxmox_api_token_id=None,
                          lxc_proxmox_api_token_secret=None)
    hosts = json.loads((inv / "hosts.yml").read_text())
    for key in ("lxc_proxmox_api_token_id", "lxc_proxmox_api_token_secret"):
        hosts["all"]["children"]["lxc"]["hosts"]["pve"].pop(key)
    (inv / "hosts.yml").write_text(json.dumps(hosts))
    result = provision("--target", "lxc", "-i", inv)
    assert result.exit_code == 6, result.output
    assert "lxc_backend 'proxmox' needs a Proxmox VE credential" in result.output
    assert not double.requests


# --- the passthrough step on the node, through the role itself -----------------------------------


def _role_play(tmp_path: Path, double: PVEDouble, node, params: dict, raw: str = "") -> subprocess.CompletedProcess:
    files = tmp_path / "files"
    (files / "host" / "proxmox").mkdir(parents=True, exist_ok=True)
    (files / "host" / "proxmox" / f"lxc-{VMID}.json").write_text(json.dumps(params))
    (files / "host" / "etc" / "pve" / "lxc").mkdir(parents=True, exist_ok=True)
    (files / "host" / "etc" / "pve" / "lxc" / f"{VMID}.conf.append").write_text(raw)
    host = {**node.inventory_vars(), "lxc_proxmox_api_token_secret": SECRET}
    (tmp_path / "hosts.json").write_text(json.dumps({"all": {"hosts": {"pve": host}}}))
    role_vars = {"pve_container_api_host": double.host, "pve_container_api_port": double.port,
                 "pve_container_api_token_id": TOKEN, "pve_container_ca_cert": double.ca_path,
                 "pve_container_node": "pve", "pve_container_vmid": VMID, "pve_container_gpu": True,
                 "pve_container_files_dir": str(files),
                 "pve_container_params_file": f"host/proxmox/lxc-{VMID}.json",
                 "pve_container_raw_file": f"host/etc/pve/lxc/{VMID}.conf.append"}
    play = tmp_path / "play.yml"
    play.write_text("- hosts: all\n  gather_facts: false\n  roles:\n    - role: pve_container\n")
    bin_dir = Path(sys.executable).parent
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "ANSIBLE_ROLES_PATH": str(ROOT / "roles"), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_HOST_KEY_CHECKING": "False", "HOME": str(tmp_path)}
    return subprocess.run([str(bin_dir / "ansible-playbook"), "-i", str(tmp_path / "hosts.json"), str(play),
                           "-e", json.dumps(role_vars)], env=env, capture_output=True, text=True, timeout=300)


CREATE = {"vmid": VMID, "hostname": "ollama", "ostemplate": "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst",
          "cores": 2, "memory": 2048, "swap": 0, "rootfs": "local-lvm:8", "net0": "name=eth0,bridge=vmbr0,ip=dhcp",
          "unprivileged": 1, "features": "nesting=1", "onboot": 1, "start": 0}
DEVICES = {"dev0": "/dev/nvidia0,gid=44", "dev1": "/dev/nvidiactl,gid=44", "dev2": "/dev/nvidia-uvm,gid=44"}


def test_devN_passthrough_is_set_with_pct_on_the_node_and_a_change_reboots_the_container(pve, tmp_path):
    double, node = pve
    params = {"passthrough": "devN", "majors": [195, 511], "create": CREATE, "config": DEVICES}
    run = _role_play(tmp_path, double, node, params)
    assert run.returncode == 0, run.stdout[-4000:]
    config = double.containers[VMID].config
    # pct set on the node wrote them into the shared file; the API reads them back from it.
    assert {k: config[k] for k in DEVICES} == DEVICES
    assert "dev0: /dev/nvidia0,gid=44" in node.conf(VMID)
    assert double.containers[VMID].status == "running"
    assert not [r for r in double.requests if r.method == "PUT"]  # no devN through the API (a token cannot)
    started = double.containers[VMID].started_at

    again = _role_play(tmp_path, double, node, params)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
    assert double.containers[VMID].started_at == started

    fewer = _role_play(tmp_path, double, node, {**params, "config": {"dev0": "/dev/nvidia0,gid=44"}})
    assert fewer.returncode == 0, fewer.stdout[-3000:]
    config = double.containers[VMID].config
    assert "dev1" not in config and "dev2" not in config and config["dev0"] == "/dev/nvidia0,gid=44"
    assert [t.type for t in double.tasks][-1] == "vzreboot"


def test_raw_passthrough_lines_go_into_the_config_file_on_the_node(pve, tmp_path):
    double, node = pve
    raw = ("# rendered by ollama-provisioner\nlxc.cgroup2.devices.allow: c 195:* rwm\n"
           "lxc.cgroup2.devices.allow: c 511:* rwm\n"
           "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n")
    params = {"passthrough": "raw", "majors": [195, 511], "create": CREATE, "config": {}}
    run = _role_play(tmp_path, double, node, params, raw)
    assert run.returncode == 0, run.stdout[-4000:]
    conf = node.conf(VMID)
    assert "lxc.cgroup2.devices.allow: c 511:* rwm" in conf
    assert "# rendered by" not in conf
    # The API reads raw keys back as PVE returns them.
    assert ["lxc.cgroup2.devices.allow", "c 195:* rwm"] in double.containers[VMID].config.get("lxc", [])
    again = _role_play(tmp_path, double, node, params, raw)
    assert again.returncode == 0 and "changed=0" in again.stdout, again.stdout[-3000:]
