"""Tests of the node stand-in (tests/pve_node.py, tests/pve_node/) with the file-backed API double.

The infra tests reach the node over real SSH (OpenSSH client, and paramiko through
community.proxmox.proxmox_pct_remote) and check the pmxcfs sharing: what `pct`
writes on the node is what the double serves through proxmoxer, and the other way
round.  The first tests run the same `pct` on this machine against a temporary
directory (no Docker).  Expected texts come from the sources named in
tests/pve_node/pct; those marked representative there are the stand-in's own.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import proxmoxer
import pytest
import yaml
from proxmoxer.tools import Tasks

from tests.pve_double import PVEDouble

PCT = Path(__file__).resolve().parent / "pve_node" / "pct"
ROOT_PW = "root-password-for-the-double"
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
CREATE = dict(vmid=120, ostemplate=TEMPLATE, hostname="ollama", cores=4, memory=8192, swap=0,
              rootfs="local-lvm:16", net0="name=eth0,bridge=vmbr0,ip=dhcp", unprivileged=1)
USAGE = "pct set <vmid> [OPTIONS]\n"
BAD_PATH = ("400 Parameter verification failed.\n"
            "dev2: invalid format - format error\n"
            "dev2.path: invalid format - /tmp/x is not a valid device path\n\n\n" + USAGE)
BAD_MODE = ("400 Parameter verification failed.\n"
            "dev2: invalid format - format error\n"
            "dev2.mode: value does not match the regex pattern\n\n" + USAGE)


def wait(px: proxmoxer.ProxmoxAPI, upid: str) -> dict:
    status = Tasks.blocking_status(px, upid, timeout=10, polling_interval=0.02)
    assert status["exitstatus"] == "OK", status
    return status


def root_client(pve: PVEDouble) -> proxmoxer.ProxmoxAPI:
    return proxmoxer.ProxmoxAPI(pve.host, port=pve.port, user="root@pam", password=ROOT_PW, verify_ssl=pve.ca_path)


@pytest.fixture
def etc_pve(tmp_path) -> Path:
    return tmp_path / "etc-pve"


@pytest.fixture
def pve(etc_pve):
    with PVEDouble(task_seconds=0.05, auth_failure_delay=0, config_dir=etc_pve) as double:
        double.set_root_password(ROOT_PW)
        yield double
        assert double.internal_errors == []


# ---- pct on this machine (no Docker) --------------------------------------------------


def local_pct(etc_pve: Path, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PVE_STANDIN_ETC_PVE": str(etc_pve), "PVE_STANDIN_NODE": "pve"}
    return subprocess.run([sys.executable, str(PCT), *args], env=env, input=input, capture_output=True,
                          text=True, timeout=60)


def test_local_pct_set_config_and_errors(pve, etc_pve):
    pve.add_container(120, {"hostname": "ollama", "memory": 512, "description": "GPU: yes"})
    path = etc_pve / "nodes" / "pve" / "lxc" / "120.conf"
    r = local_pct(etc_pve, "set", "120", "--dev0", "/dev/nvidia0,gid=44", "-dev1", "path=/dev/nvidiactl,gid=44")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert path.read_text() == ("#GPU%3A yes\ndev0: /dev/nvidia0,gid=44\ndev1: /dev/nvidiactl,gid=44\n"
                                "hostname: ollama\nmemory: 512\n")
    r = local_pct(etc_pve, "config", "120")
    # pct.pm's printer: sorted, the description encode_text()-ed (its newline too)
    assert r.stdout == ("description: GPU%3A yes%0A\ndev0: /dev/nvidia0,gid=44\ndev1: /dev/nvidiactl,gid=44\n"
                        "hostname: ollama\nmemory: 512\n")
    before = path.read_bytes()
    for args, text in (
        (("--dev2", "/tmp/x"), BAD_PATH),
        (("--dev2", "/dev/nvidia-uvm,mode=999"), BAD_MODE),
        (("--nvidia", "1"), "Unknown option: nvidia\n400 unable to parse option\n" + USAGE),
        (("--dev2",), "Option dev2 requires an argument\n400 unable to parse option\n" + USAGE),
        (("--onboot", "maybe"), "400 unable to parse boolean option\n" + USAGE),
        ((), "no options specified\n"),
    ):
        r = local_pct(etc_pve, "set", "120", *args)
        assert (r.returncode, r.stdout, r.stderr) == (255, "", text), args
    assert path.read_bytes() == before
    r = local_pct(etc_pve, "set", "121", "--cores", "2")
    assert (r.returncode, r.stderr) == (255, "Configuration file 'nodes/pve/lxc/121.conf' does not exist\n")
    r = local_pct(etc_pve, "set", "--cores", "2")
    assert r.stderr == "400 not enough arguments\n" + USAGE
    # abbreviations (Getopt::Long) and --delete with a list
    assert local_pct(etc_pve, "set", "120", "--onb", "--delete", "dev0,dev1").returncode == 0
    assert path.read_text() == "#GPU%3A yes\nhostname: ollama\nmemory: 512\nonboot: 1\n"
    # the API double sees it at once: one file
    assert pve.call("GET", "/nodes/pve/lxc/120/config")["onboot"] == 1


def test_local_pct_exec_and_status(pve, etc_pve):
    pve.add_container(120, {"hostname": "ollama", "memory": 512})
    r = local_pct(etc_pve, "status", "120")
    assert (r.returncode, r.stdout) == (0, "status: stopped\n")
    r = local_pct(etc_pve, "exec", "120", "--", "true")
    assert r.returncode == 1 and "Failed to get init pid" in r.stderr
    r = local_pct(etc_pve, "exec", "120", "id", "-u")  # options before `--` are pct's
    assert (r.returncode, r.stderr) == (255, "Unknown option: u\n400 unable to parse option\n"
                                             "pct exec <vmid> [<extra-args>]\n")
    r = local_pct(etc_pve, "start", "120")  # the task runs in the foreground, as in the CLI
    assert (r.returncode, r.stderr) == (0, "")
    assert (etc_pve / ".standin" / "120.status").read_text() == "running\n"
    assert pve.containers[120].status == "running"  # the API double reads the state back
    assert local_pct(etc_pve, "start", "120").stderr == "CT 120 already running\n"
    r = local_pct(etc_pve, "exec", "120", "--", "sh", "-c", "cat; exit 3", input="from stdin\n")
    assert (r.returncode, r.stdout) == (3, "from stdin\n")
    r = local_pct(etc_pve, "exec", "999", "--", "true")
    assert (r.returncode, r.stderr) == (255, "Configuration file 'nodes/pve/lxc/999.conf' does not exist\n")


# ---- the node over SSH (Docker) -------------------------------------------------------

infra = pytest.mark.infra


@pytest.fixture
def node(etc_pve, pve):
    from tests.pve_node import pve_node

    with pve_node(config_dir=etc_pve) as n:
        yield n


def create_ct(pve: PVEDouble, **extra) -> proxmoxer.ProxmoxAPI:
    px = root_client(pve)
    wait(px, px.nodes("pve").lxc.post(**{**CREATE, **extra}))
    return px


@infra
def test_pct_set_over_ssh_is_what_the_api_serves(pve, node):
    px = create_ct(pve)
    before = px.nodes("pve").lxc(120).config.get()
    r = node.ssh("pct set 120 --dev0 /dev/nvidia0,gid=44 --dev1 /dev/nvidiactl,gid=44 --dev2 /dev/nvidia-uvm,gid=44")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    text = node.conf(120)
    assert "dev0: /dev/nvidia0,gid=44\ndev1: /dev/nvidiactl,gid=44\ndev2: /dev/nvidia-uvm,gid=44\n" in text
    assert node.ssh("cat /etc/pve/lxc/120.conf").stdout == text  # /etc/pve/lxc -> nodes/pve/lxc
    conf = px.nodes("pve").lxc(120).config.get()
    assert (conf["dev0"], conf["dev1"], conf["dev2"]) == (
        "/dev/nvidia0,gid=44", "/dev/nvidiactl,gid=44", "/dev/nvidia-uvm,gid=44")
    assert conf["digest"] == hashlib.sha1(text.encode()).hexdigest() != before["digest"]
    # and the other way round: a change through the API is what pct config shows
    px.nodes("pve").lxc(120).config.put(cores=2)
    assert "cores: 2\n" in node.ssh("pct config 120").stdout


@infra
def test_bad_device_refused_and_file_unchanged(pve, node):
    create_ct(pve)
    before = node.conf(120)
    r = node.ssh("pct set 120 --dev2 /tmp/x")
    assert (r.returncode, r.stdout, r.stderr) == (255, "", BAD_PATH)
    r = node.ssh("pct set 120 --dev2 /dev/nvidia-uvm,mode=999")
    assert (r.returncode, r.stdout, r.stderr) == (255, "", BAD_MODE)
    r = node.ssh("pct set 120 --dev2 /dev/nvidia-uvm,owner=0")
    assert r.returncode == 255 and r.stderr.startswith(
        "400 Parameter verification failed.\n"
        "dev2: invalid format - invalid key in comma-separated list property: owner\n")
    assert node.conf(120) == before


@infra
def test_delete_over_ssh(pve, node):
    px = create_ct(pve, dev0="/dev/nvidia0,gid=44", dev1="/dev/nvidiactl,gid=44")
    assert node.ssh("pct set 120 --delete dev1").returncode == 0
    conf = px.nodes("pve").lxc(120).config.get()
    assert "dev1" not in conf and conf["dev0"] == "/dev/nvidia0,gid=44"
    assert node.ssh("pct set 120 --delete dev0 --delete cores").returncode == 0
    assert not {"dev0", "cores"} & set(px.nodes("pve").lxc(120).config.get())
    assert "dev" not in node.conf(120)


@infra
def test_exec_refuses_a_stopped_ct_and_runs_with_stdin(pve, node):
    px = create_ct(pve)
    r = node.ssh("pct exec 120 -- id -u")
    assert r.returncode == 1 and "Failed to get init pid" in r.stderr and r.stdout == ""
    assert node.ssh("pct status 120").stdout == "status: stopped\n"
    wait(px, px.nodes("pve").lxc(120).status.start.post())
    assert node.ssh("pct status 120").stdout == "status: running\n"
    r = node.ssh("pct exec 120 -- sh -c 'cat > /tmp/from-stdin; id -u'", input="payload\n")
    assert (r.returncode, r.stdout) == (0, "0\n")
    assert node.exec("cat", "/tmp/from-stdin").stdout == "payload\n"  # on the node itself: no container
    assert node.ssh("pct exec 120 -- sh -c 'exit 7'").returncode == 7
    wait(px, px.nodes("pve").lxc(120).status.stop.post())
    assert node.ssh("pct exec 120 -- true").returncode == 1


@infra
def test_raw_lxc_lines_written_on_the_node(pve, node):
    """The PVE < 8.1 way: lines appended to the file by hand, read back by the API."""
    px = create_ct(pve)
    lines = ("lxc.cgroup2.devices.allow: c 195:* rwm\n"
             "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n")
    assert node.ssh("cat >> /etc/pve/lxc/120.conf", input=lines).returncode == 0
    assert px.nodes("pve").lxc(120).config.get()["lxc"] == [
        ["lxc.cgroup2.devices.allow", "c 195:* rwm"],
        ["lxc.mount.entry", "/dev/nvidia0 dev/nvidia0 none bind,optional,create=file"]]
    assert node.ssh("pct config 120").stdout.endswith(lines)


@infra
@pytest.mark.parametrize("version", ["8.2.4", "8.0.4"])
def test_pveversion(etc_pve, version):
    from tests.pve_node import pve_node

    with pve_node(config_dir=etc_pve, pve_version=version) as n:
        r = n.ssh("command -v pveversion >/dev/null && pveversion")
    assert r.returncode == 0
    m = re.fullmatch(r"pve-manager/(\d+\.\d+\.\d+)/([0-9a-f]{16}) \(running kernel: (\S+)\)\n", r.stdout)
    assert m and m.group(1) == version
    if version == "8.2.4":
        assert r.stdout == "pve-manager/8.2.4/faa83925c9641325 (running kernel: 6.8.12-1-pve)\n"


@infra
@pytest.mark.slow
def test_ansible_through_proxmox_pct_remote(pve, node, tmp_path):
    assert importlib.util.find_spec("paramiko"), "proxmox_pct_remote needs paramiko (a project dependency)"
    px = create_ct(pve)
    wait(px, px.nodes("pve").lxc(120).status.start.post())
    create_ct(pve, vmid=121, hostname="stopped")
    ct_vars = {**node.inventory_vars(), "ansible_connection": "community.proxmox.proxmox_pct_remote"}
    inventory = {"all": {"hosts": {"ct120": {**ct_vars, "proxmox_vmid": 120},
                                   "ct121": {**ct_vars, "proxmox_vmid": 121}}}}
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inventory))
    (tmp_path / "play.yml").write_text(yaml.safe_dump([{
        "hosts": "all", "gather_facts": False,
        "tasks": [
            {"name": "id", "ansible.builtin.command": "id -u", "register": "uid"},
            {"name": "copy", "ansible.builtin.copy": {"content": "{{ inventory_hostname }} was here\n",
                                                      "dest": "/root/from-ansible-{{ proxmox_vmid }}.txt",
                                                      "mode": "0640"}},
            {"name": "show", "ansible.builtin.debug": {"msg": "uid={{ uid.stdout }}"}},
        ]}]))
    (tmp_path / "ansible.cfg").write_text("[defaults]\n")  # none of the machine's settings
    env = {**os.environ, "ANSIBLE_CONFIG": str(tmp_path / "ansible.cfg"),
           "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
           "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"), "ANSIBLE_RETRY_FILES_ENABLED": "0"}
    playbook = Path(sys.executable).parent / "ansible-playbook"
    r = subprocess.run([str(playbook), "-i", "hosts.yml", "play.yml"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    assert "{" in r.stdout, r.stdout + r.stderr
    doc = json.loads(r.stdout[r.stdout.index("{"):])
    stats = doc["stats"]
    assert stats["ct120"]["failures"] == 0 and stats["ct120"]["unreachable"] == 0, r.stdout[-3000:]
    results = {t["task"]["name"]: t["hosts"] for t in doc["plays"][0]["tasks"]}
    assert results["id"]["ct120"]["stdout"] == "0"
    assert results["copy"]["ct120"]["changed"] is True
    assert node.exec("cat", "/root/from-ansible-120.txt").stdout == "ct120 was here\n"
    assert node.exec("stat", "-c", "%a", "/root/from-ansible-120.txt").stdout == "640\n"
    # the stopped container: refused by pct exec, reported by Ansible
    failed = results["id"]["ct121"]
    # (pct exec's exit status 1 on its first command; Ansible does not show its stderr here)
    assert failed.get("unreachable") is True and "exited with result 1" in failed["msg"], failed
    assert r.returncode != 0  # one host failed
