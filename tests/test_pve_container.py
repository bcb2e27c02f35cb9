"""Role pve_container's API module, run by real Ansible against the Proxmox VE API double.

The module (roles/pve_container/library/pve_container.py) drives the real proxmoxer client over
HTTPS against tests/pve_double.py (a double: see what it cannot prove in its docstring), as the
role runs it: on the controller, the token secret from the environment or the inventory.
The node's side (pct set, /etc/pve/lxc) is tested in tests/test_pve_node.py and test_lxc_proxmox.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.pve_double import DEFAULT_TEMPLATE, PVEDouble

# Real Ansible runs (a few seconds each): with the infrastructure tests, not the fast unit ones.
pytestmark = pytest.mark.infra

ROOT = Path(__file__).resolve().parent.parent
LIBRARY = ROOT / "roles" / "pve_container" / "library"
ANSIBLE = Path(sys.executable).parent / "ansible"
TOKEN, SECRET = "prov@pve!ci", "0b8f6c2e-5a1d-4e7b-9c3f-6d2a8e1b4f70"
ROOT_PW = "a-root-password-for-the-double"
# What the README asks of the provisioner's token (section "The credential").
CT_PRIVS = {"VM.Allocate", "VM.Audit", "VM.PowerMgmt", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Disk",
            "VM.Config.Network", "VM.Config.Options"}


def token_acl(vmid: int = 120, *, node: str = "pve", storage: str = "local-lvm", templates: str = "local",
              bridge: str = "vmbr0") -> dict[str, set[str]]:
    return {
        f"/vms/{vmid}": CT_PRIVS,
        f"/storage/{storage}": {"Datastore.AllocateSpace"},
        f"/storage/{templates}": {"Datastore.Audit", "Datastore.AllocateTemplate"},
        f"/sdn/zones/localnetwork/{bridge}": {"SDN.Use"},
        f"/nodes/{node}": {"Sys.Audit"},
    }


ACL = token_acl()
CREATE = {"hostname": "ollama", "ostemplate": DEFAULT_TEMPLATE, "cores": 4, "memory": 8192, "swap": 0,
          "rootfs": "local-lvm:16", "net0": "name=eth0,bridge=vmbr0,ip=dhcp", "unprivileged": 1,
          "features": "nesting=1", "onboot": 1, "start": 0}


@pytest.fixture
def pve():
    with PVEDouble(task_seconds=0.05, auth_failure_delay=0) as double:
        double.add_token(TOKEN, SECRET, privsep=True, acl=ACL)
        double.set_root_password(ROOT_PW)
        yield double
        assert double.internal_errors == []


def module(pve: PVEDouble, state: str, *, check: bool = False, env: dict | None = None,
           api: dict | None = None, **args) -> tuple[int, dict, str]:
    """Run the module once through real Ansible (ad hoc, on the controller); (rc, result, output)."""
    params = {"api": {"host": pve.host, "port": pve.port, "ca_cert": pve.ca_path, **(api or {})},
              "node": "pve", "vmid": 120, "state": state, "task_timeout": 30, "address_timeout": 5, **args}
    environment = {**os.environ, "ANSIBLE_LIBRARY": str(LIBRARY), "ANSIBLE_MODULE_UTILS": str(LIBRARY.parent / "module_utils"),
                   "ANSIBLE_LOAD_CALLBACK_PLUGINS": "1",
                   "ANSIBLE_STDOUT_CALLBACK": "ansible.builtin.json", "ANSIBLE_NOCOLOR": "1",
                   "ANSIBLE_LOCALHOST_WARNING": "0", "ANSIBLE_INVENTORY_UNPARSED_WARNING": "0",
                   "ANSIBLE_INVENTORY_UNPARSED_FAILED": "0",
                   "ANSIBLE_PYTHON_INTERPRETER": sys.executable,
                   "PROXMOX_TOKEN_ID": TOKEN, "PROXMOX_TOKEN_SECRET": SECRET, **(env or {})}
    environment = {k: v for k, v in environment.items() if v is not None}
    # An inventory of its own: the provisioner, loaded earlier in this process, sets
    # ANSIBLE_INVENTORY_UNPARSED_FAILED, which an implicit localhost would trip over.
    cmd = [str(ANSIBLE), "localhost", "-i", "localhost,", "-c", "local", "-m", "pve_container",
           "-a", json.dumps(params)] + (["--check"] if check else [])
    proc = subprocess.run(cmd, env=environment, capture_output=True, text=True, timeout=120)
    doc = json.loads(proc.stdout)
    result = doc["plays"][0]["tasks"][0]["hosts"]["localhost"]
    return proc.returncode, result, proc.stdout + proc.stderr


def posts(pve: PVEDouble) -> list[str]:
    return [f"{r.method} {r.path}" for r in pve.requests if r.method in ("POST", "PUT", "DELETE")
            and not r.path.endswith("/access/ticket")]


def test_create_configure_start_address_then_a_rerun_changes_nothing(pve):
    pve.dhcp_addresses[120] = "192.0.2.120/24"
    rc, result, out = module(pve, "present", create=CREATE)
    assert rc == 0, out
    assert result["changed"] and result["created"] and result["status"] == "stopped"
    config = pve.containers[120].config
    assert "Managed by ollama-provisioner" in config["description"]
    assert "ollama-provisioner" in config["tags"].split(";")
    assert config["cores"] == 4 and config["unprivileged"] == 1
    rc, result, out = module(pve, "started")
    assert rc == 0, out
    assert result["address"] == "192.0.2.120" and pve.containers[120].status == "running"
    # Every task was waited for until it stopped (status polled after each POST that made one).
    assert all(t.status == "stopped" for t in pve.tasks)
    before = posts(pve)
    for state in ("present", "started"):
        rc, result, out = module(pve, state, create=CREATE)
        assert rc == 0 and not result["changed"], out
    assert posts(pve) == before
    assert SECRET not in out


def test_a_changed_option_is_put_alone_and_the_container_keeps_running(pve):
    assert module(pve, "present", create=CREATE)[0] == 0
    assert module(pve, "started")[0] == 0
    started = pve.containers[120].started_at
    rc, result, out = module(pve, "present", create={**CREATE, "cores": 8})
    assert rc == 0 and result["changes"] == ["set cores"], out
    assert pve.containers[120].config["cores"] == 8
    put = [r for r in pve.requests if r.method == "PUT"][-1]
    assert set(put.params) == {"cores"}
    assert pve.containers[120].started_at == started


def test_a_missing_template_is_downloaded_through_the_appliance_index(pve):
    pve.storages["local"].volumes.clear()
    rc, result, out = module(pve, "present", create=CREATE)
    assert rc == 0, out
    assert result["changes"][0] == f"download template {DEFAULT_TEMPLATE}"
    assert [t.type for t in pve.tasks][:2] == ["download", "vzcreate"]


def test_a_template_nowhere_to_be_found_is_named_with_the_fix(pve):
    rc, result, out = module(pve, "present", create={**CREATE, "ostemplate": "local:vztmpl/alpine-1.0_amd64.tar.xz"})
    assert rc != 0
    assert "template local:vztmpl/alpine-1.0_amd64.tar.xz is not in storage 'local'" in result["msg"]
    assert "pveam download local alpine-1.0_amd64.tar.xz" in result["msg"]
    assert posts(pve) == []


def test_a_failed_task_reports_its_exit_status_and_log_tail(pve):
    pve.fail_next("vzcreate", "unable to create CT 120 - no space left on device", vmid=120,
                  log=["extracting archive '/var/lib/vz/template/cache/debian-12.tar.zst'", "tar: write error"])
    rc, result, out = module(pve, "present", create=CREATE)
    assert rc != 0
    msg = result["msg"]
    assert msg.startswith("the task to create CT 120 failed: unable to create CT 120 - no space left on device")
    assert "tar: write error" in msg and "TASK ERROR" in msg
    assert 120 not in pve.containers


def test_a_token_without_a_privilege_is_told_which_and_where(pve):
    pve.add_token("weak@pve!ci", SECRET, privsep=True,
                  acl={**ACL, "/vms/120": CT_PRIVS - {"VM.Allocate"}})
    rc, result, out = module(pve, "present", create=CREATE, env={"PROXMOX_TOKEN_ID": "weak@pve!ci"})
    assert rc != 0
    # Create's own check has alternatives (the vmid or a pool), so PVE names neither: the module does.
    assert result["msg"].startswith("the Proxmox VE API refused to create CT 120 for weak@pve!ci: "
                                    "Permission check failed (403); it needs VM.Allocate on /vms/120")
    assert "pveum acl modify /vms/120 --tokens 'weak@pve!ci'" in result["msg"]
    assert 120 not in pve.containers
    # A check with a path and a privilege is named as PVE names it.
    pve.add_token("nopower@pve!ci", SECRET, privsep=True, acl={**ACL, "/vms/120": CT_PRIVS - {"VM.PowerMgmt"}})
    assert module(pve, "present", create=CREATE)[0] == 0
    rc, result, out = module(pve, "started", env={"PROXMOX_TOKEN_ID": "nopower@pve!ci"})
    assert rc != 0
    assert result["msg"].startswith("nopower@pve!ci lacks the privilege VM.PowerMgmt on /vms/120 (403 from the "
                                    "Proxmox VE API while trying to start CT 120)")
    assert pve.containers[120].status == "stopped"


def test_a_foreign_vmid_is_refused_before_any_change(pve):
    pve.add_container(120, {"hostname": "grafana", "ostemplate": DEFAULT_TEMPLATE, "rootfs": "local-lvm:vm-120-disk-0,size=8G",
                            "description": "the user's monitoring", "memory": 1024}, status="running")
    for state in ("present", "started", "absent", "query"):
        rc, result, out = module(pve, state, create=CREATE)
        assert rc != 0, state
        assert "CT 120 on node 'pve' (hostname 'grafana') was not created by ollama-provisioner" in result["msg"]
    assert posts(pve) == []
    assert pve.containers[120].status == "running"


def test_a_vmid_taken_by_a_vm_is_named(pve):
    pve.add_vm(120)
    rc, result, out = module(pve, "present", create=CREATE)
    assert rc != 0
    assert "lxc_vmid 120 is taken by a guest this project did not create" in result["msg"]


def test_tls_failure_and_an_unreachable_api_name_the_host_and_the_setting(pve):
    rc, result, out = module(pve, "query", api={"ca_cert": None})
    assert rc != 0
    assert f"TLS to the Proxmox VE API at https://{pve.host}:{pve.port} failed" in result["msg"]
    assert "lxc_proxmox_validate_certs" in result["msg"]
    rc, result, out = module(pve, "query", api={"port": 1})
    assert rc != 0
    assert f"the Proxmox VE API at https://{pve.host}:1 is unreachable" in result["msg"]
    assert "lxc_proxmox_validate_certs" in result["msg"]


def test_a_wrong_secret_is_refused_without_showing_it(pve):
    rc, result, out = module(pve, "query", env={"PROXMOX_TOKEN_SECRET": "not-the-secret-0000"})
    assert rc != 0
    assert "refused API token prov@pve!ci (401" in result["msg"]
    assert "not-the-secret-0000" not in out


def test_the_token_secret_given_as_an_argument_is_not_logged(pve):
    rc, result, out = module(pve, "query", api={"token_id": TOKEN, "token_secret": SECRET},
                             env={"PROXMOX_TOKEN_ID": None, "PROXMOX_TOKEN_SECRET": None})
    assert rc == 0, out
    assert result["status"] == "absent"
    assert SECRET not in out


def test_with_root_password_the_api_sets_devN_and_a_changed_set_reboots(pve):
    env = {"PROXMOX_TOKEN_ID": None, "PROXMOX_TOKEN_SECRET": None, "PROXMOX_PASSWORD": ROOT_PW}
    devices = {"dev0": "/dev/nvidia0,gid=44", "dev1": "/dev/nvidiactl,gid=44"}
    rc, result, out = module(pve, "present", create=CREATE, config=devices, env=env)
    assert rc == 0, out
    assert pve.containers[120].config["dev0"].startswith("/dev/nvidia0")
    assert module(pve, "started", env=env)[0] == 0
    started = pve.containers[120].started_at
    # One node fewer: its entry goes and the running container is rebooted to see it.
    rc, result, out = module(pve, "started", create=CREATE, config={"dev0": "/dev/nvidia0,gid=44"}, env=env)
    assert rc == 0, out
    assert "dev1" not in pve.containers[120].config
    assert any(c.startswith("reboot CT 120") for c in result["changes"])
    assert pve.containers[120].started_at != started
    assert ROOT_PW not in out


def test_a_token_cannot_set_devN_so_the_module_says_where_it_is_done(pve):
    rc, result, out = module(pve, "present", create=CREATE, config={"dev0": "/dev/nvidia0,gid=44"})
    assert rc != 0
    assert "devN entries can only be set through the API by root@pam" in result["msg"]
    assert posts(pve) == []


def test_check_mode_changes_nothing_and_says_what_it_would_do(pve):
    rc, result, out = module(pve, "present", create=CREATE, check=True)
    assert rc == 0, out
    assert result["changed"] and result["changes"] == ["create CT 120"]
    assert posts(pve) == [] and 120 not in pve.containers


def test_destroy_removes_only_our_container(pve):
    assert module(pve, "present", create=CREATE)[0] == 0
    assert module(pve, "started")[0] == 0
    rc, result, out = module(pve, "absent")
    assert rc == 0 and result["changed"], out
    assert 120 not in pve.containers
    assert [t.type for t in pve.tasks][-2:] == ["vzstop", "vzdestroy"]
    rc, result, out = module(pve, "absent")
    assert rc == 0 and not result["changed"]


def test_a_full_storage_fails_the_create_task_and_says_so(pve):
    pve.storages["local-lvm"].avail = 4 * 1024**3  # 4 GiB left, 16 GiB asked
    rc, result, out = module(pve, "present", create=CREATE)
    assert rc != 0
    assert result["msg"].startswith("the task to create CT 120 failed: unable to create CT 120 - no space left on device")
    assert 120 not in pve.containers


def test_a_password_for_another_user_drives_the_api_but_never_sets_devN(pve):
    pve.add_user("ops@pve", password="ops-password-for-the-double", acl=ACL)
    env = {"PROXMOX_TOKEN_ID": None, "PROXMOX_TOKEN_SECRET": None, "PROXMOX_PASSWORD": "ops-password-for-the-double"}
    rc, result, out = module(pve, "present", create=CREATE, env=env, api={"user": "ops@pve"})
    assert rc == 0, out
    assert pve.containers[120].config["hostname"] == "ollama"
    rc, result, out = module(pve, "present", create=CREATE, config={"dev0": "/dev/nvidia0,gid=44"}, env=env,
                             api={"user": "ops@pve"})
    assert rc != 0 and "devN entries can only be set through the API by root@pam" in result["msg"]
