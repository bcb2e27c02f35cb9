"""Tests of tests/pve_double.py, the test double of the Proxmox VE API.

They drive the REAL client (proxmoxer over requests, HTTPS verified against the
double's generated CA) and, where the wire shape itself is the point (status
line, body, headers), plain requests.  Every expected text here comes from
/work/shared/reference/proxmox-api.md or pve-api-lxc.json unless a comment says
it is the double's own or "representative".
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import proxmoxer
import pytest
import requests
from proxmoxer.core import AuthenticationError, ResourceException
from proxmoxer.tools import Tasks

from tests import pve_conf, pve_double
from tests.pve_double import PVEDouble

REFERENCE = Path("/work/shared/reference/pve-api-lxc.json")
TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
TOKEN, SECRET = "prov@pve!ci", "5f1c9a3e-0d2b-4c1e-9f7a-2b6d8e4a1c30"
CT_PRIVS = {"VM.Allocate", "VM.Audit", "VM.PowerMgmt", "VM.Config.CPU", "VM.Config.Memory",
            "VM.Config.Disk", "VM.Config.Network", "VM.Config.Options"}
PROV_ACL = {
    "/vms/120": CT_PRIVS,
    "/storage/local-lvm": {"Datastore.AllocateSpace"},
    "/storage/local": {"Datastore.Audit", "Datastore.AllocateTemplate"},
    "/sdn/zones/localnetwork/vmbr0": {"SDN.Use"},
    "/nodes/pve": {"Sys.Audit"},
}
CREATE = dict(vmid=120, ostemplate=TEMPLATE, hostname="ollama", cores=4, memory=8192, swap=0,
              rootfs="local-lvm:16", net0="name=eth0,bridge=vmbr0,ip=dhcp", unprivileged=1,
              features="nesting=1", onboot=1, start=0, tags="ollama,gpu", description="ollama test")
UPID_RE = re.compile(r"UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:(\w+):([^:]*):([^:]+):")
ROOT_PW = "root-password-for-the-double"


@pytest.fixture
def pve():
    with PVEDouble(task_seconds=0.1, auth_failure_delay=0) as double:
        double.add_token(TOKEN, SECRET, privsep=True, acl=PROV_ACL)
        double.set_root_password(ROOT_PW)
        yield double
        assert double.internal_errors == []


def token_client(pve: PVEDouble, tokenid: str = TOKEN, secret: str = SECRET, **kw) -> proxmoxer.ProxmoxAPI:
    user, name = tokenid.split("!")
    return proxmoxer.ProxmoxAPI(pve.host, port=pve.port, user=user, token_name=name, token_value=secret,
                                verify_ssl=kw.pop("verify_ssl", pve.ca_path), **kw)


def root_client(pve: PVEDouble) -> proxmoxer.ProxmoxAPI:
    return proxmoxer.ProxmoxAPI(pve.host, port=pve.port, user="root@pam", password=ROOT_PW,
                                verify_ssl=pve.ca_path)


def wait(px: proxmoxer.ProxmoxAPI, upid: str) -> dict:
    return Tasks.blocking_status(px, upid, timeout=5, polling_interval=0.02)


def raw(pve: PVEDouble, method: str, path: str, auth: str | None = f"PVEAPIToken={TOKEN}={SECRET}",
        **kw) -> requests.Response:
    headers = kw.pop("headers", {})
    if auth:
        headers["Authorization"] = auth
    return requests.request(method, f"{pve.url}/api2/json{path}", headers=headers, verify=pve.ca_path,
                            timeout=5, **kw)


def refused(call) -> ResourceException:
    with pytest.raises(ResourceException) as info:
        call()
    return info.value


def create_errors(px, **params) -> dict:
    return refused(lambda: px.nodes("pve").lxc.post(**{**CREATE, **params})).errors


# ---------------------------------------------------------------------------------------


def test_embedded_schema_is_the_reference_extract():
    assert pve_double.MISSING_FORMATS == set()
    if not REFERENCE.exists():
        pytest.skip(f"{REFERENCE} not present here; the embedded extract is used as is")
    raw_doc = json.loads(REFERENCE.read_text())
    assert pve_double.extract_schema(raw_doc) == pve_double.SCHEMA
    for key in pve_double.NOT_SERVED_ENDPOINTS:
        assert key in raw_doc["endpoints"] and key not in pve_double.SCHEMA
    assert set(raw_doc["endpoints"]) == set(pve_double.SCHEMA) | set(pve_double.NOT_SERVED_ENDPOINTS)
    for name, entry in raw_doc["indexed_keys"].items():
        last = int(re.search(r"(\d+)$", entry["keys"]).group(1))
        assert pve_double.INDEXED_KEYS[name.removesuffix("[n]")] == last + 1


def test_tls_trusts_only_the_generated_ca(pve):
    assert pve.url == f"https://127.0.0.1:{pve.port}"
    assert token_client(pve).version.get()["release"] == "9.1"
    # SAN localhost works too, against the same CA
    by_name = proxmoxer.ProxmoxAPI("localhost", port=pve.port, user="prov@pve", token_name="ci",
                                   token_value=SECRET, verify_ssl=pve.ca_path)
    assert by_name.nodes.get()[0]["node"] == "pve"
    # what a real user sees with the default trust store: a TLS verification error
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        token_client(pve, verify_ssl=True).version.get()
    assert pve.internal_errors == []


def test_create_wait_read_back(pve):
    px = token_client(pve)
    upid = px.nodes("pve").lxc.post(**CREATE)
    m = UPID_RE.fullmatch(upid)
    assert m and m.groups() == ("vzcreate", "120", TOKEN)
    assert Tasks.decode_upid(upid)["user"] == "prov@pve"
    # while the task runs, the config holds only the create lock
    assert set(px.nodes("pve").lxc(120).config.get()) == {"lock", "digest"}
    status = wait(px, upid)
    assert status["status"] == "stopped" and status["exitstatus"] == "OK"
    assert status["user"] == "prov@pve" and status["tokenid"] == "ci" and status["type"] == "vzcreate"
    conf = px.nodes("pve").lxc(120).config.get()
    hwaddr = re.fullmatch(r"name=eth0,bridge=vmbr0,hwaddr=(BC:24:11(?::[0-9A-F]{2}){3}),ip=dhcp,type=veth",
                          conf.pop("net0"))
    assert hwaddr
    assert re.fullmatch(r"[0-9a-f]{40}", conf.pop("digest"))
    assert conf == {"hostname": "ollama", "cores": 4, "memory": 8192, "swap": 0, "features": "nesting=1",
                    "onboot": 1, "tags": "gpu;ollama", "description": "ollama test", "unprivileged": 1,
                    "rootfs": "local-lvm:vm-120-disk-0,size=16G", "arch": "amd64", "ostype": "debian"}
    assert "ostemplate" not in pve.containers[120].config
    disk = px.nodes("pve").storage("local-lvm").content.get(vmid=120)
    assert disk == [{"volid": "local-lvm:vm-120-disk-0", "content": "rootdir", "format": "raw",
                     "size": 16 * 1024**3, "ctime": disk[0]["ctime"], "vmid": 120}]
    assert px.nodes("pve").lxc.get()[0]["status"] == "stopped"


def test_unknown_parameter_and_raw_lxc_key_are_400(pve):
    px = token_client(pve)
    exc = refused(lambda: px.nodes("pve").lxc.post(**CREATE, foo="bar",
                                                   **{"lxc.cgroup2.devices.allow": "c 195:* rwm"}))
    not_defined = "property is not defined in schema and the schema does not allow additional properties"
    assert exc.status_code == 400 and exc.status_message == "Bad Request"
    assert exc.content == "Parameter verification failed."
    assert exc.errors == {"foo": not_defined, "lxc.cgroup2.devices.allow": not_defined}
    assert str(exc).startswith("400 Bad Request: Parameter verification failed. - {")
    # the wire: status line and the whole envelope
    r = raw(pve, "POST", "/nodes/pve/lxc", data={**CREATE, "foo": "bar"})
    assert (r.status_code, r.reason) == (400, "Parameter verification failed.")
    assert r.headers["Content-Type"] == "application/json;charset=UTF-8"
    assert r.json() == {"data": None, "errors": {"foo": not_defined},
                        "message": "Parameter verification failed.\n"}
    assert 120 not in pve.containers


def test_python_true_is_not_a_boolean(pve):
    px = token_client(pve)
    assert create_errors(px, unprivileged=True, onboot=False) == {
        "unprivileged": "type check ('boolean') failed - got 'True'",
        "onboot": "type check ('boolean') failed - got 'False'",
    }
    assert create_errors(px, onboot="true") == {"onboot": "type check ('boolean') failed - got 'true'"}
    # JSON true/false pass in a JSON body
    r = raw(pve, "POST", "/nodes/pve/lxc", json={**CREATE, "unprivileged": True, "onboot": True, "start": False})
    assert r.status_code == 200 and UPID_RE.fullmatch(r.json()["data"])


def test_schema_checks_types_formats_and_property_strings(pve):
    px = token_client(pve)
    fmt = "invalid format - "
    assert create_errors(px, vmid="abc") == {"vmid": "type check ('integer') failed - got 'abc'"}
    assert create_errors(px, vmid=99) == {"vmid": fmt + "value does not look like a valid VM ID\n"}
    assert create_errors(px, memory=8, cores=9000, arch="x86") == {
        "memory": "value must have a minimum value of 16",
        "cores": "value must have a maximum value of 8192",
        "arch": "value 'x86' does not have a value in the enumeration 'amd64, i386, arm64, armhf, riscv32, riscv64'",
    }
    assert create_errors(px, password="abc", hostname="bad_host") == {
        "password": "value must be at least 5 characters long",
        "hostname": fmt + "value does not look like a valid DNS name\n",
    }
    assert create_errors(px, description="x" * 8193) == {"description": "value may only be 8192 characters long"}
    assert create_errors(px, ostemplate=None) == {"ostemplate": "property is missing and it is not optional"}
    assert create_errors(px, net0="bridge=vmbr0,ip=dhcp") == {
        "net0": fmt + "format error\nnet0.name: property is missing and it is not optional\n"}
    assert create_errors(px, net0="name=eth0,foo=1") == {
        "net0": fmt + "invalid key in comma-separated list property: foo\n"}
    assert create_errors(px, net0="name=eth0,ip=10.0.0.5") == {
        "net0": fmt + "format error\nnet0.ip: invalid format - value does not look like a valid ipv4 "
                      "network configuration\n\n"}
    assert create_errors(px, dev0="/dev/nvidia0,mode=777") == {
        "dev0": fmt + "format error\ndev0.mode: value does not match the regex pattern\n"}
    assert create_errors(px, dev1="/tmp/x") == {"dev1": fmt + "format error\ndev1.path: invalid format - "
                                                               "/tmp/x is not a valid device path\n\n"}
    # indexed keys exist only in their range: net0..net31, dev0..dev255
    not_defined = "property is not defined in schema and the schema does not allow additional properties"
    assert create_errors(px, net32="name=eth1", dev256="/dev/null") == {"net32": not_defined,
                                                                        "dev256": not_defined}
    assert create_errors(px, unique=1) == {"restore": "missing property - 'unique' requires this property"}
    # nothing was created by any of these
    assert pve.containers == {}


def test_device_passthrough_refused_for_every_token(pve):
    msg = "Permission check failed (configuring device passthrough is only allowed for root@pam)"
    px = token_client(pve)
    exc = refused(lambda: px.nodes("pve").lxc.post(**CREATE, dev0="/dev/nvidia0,gid=44"))
    assert (exc.status_code, exc.content, exc.errors) == (403, msg, None)
    # root's own token, without privilege separation, is still not root@pam
    pve.add_token("root@pam!full", "root-token-secret", privsep=False)
    rootpx = token_client(pve, "root@pam!full", "root-token-secret")
    assert refused(lambda: rootpx.nodes("pve").lxc.post(**CREATE, dev0="/dev/nvidia0")).content == msg
    wait(rootpx, rootpx.nodes("pve").lxc.post(**CREATE))
    assert refused(lambda: rootpx.nodes("pve").lxc(120).config.put(dev0="/dev/nvidia0")).content == msg
    r = raw(pve, "PUT", "/nodes/pve/lxc/120/config", auth="PVEAPIToken=root@pam!full=root-token-secret",
            data={"dev0": "/dev/nvidia0"})
    assert (r.status_code, r.reason) == (403, msg)
    assert r.json() == {"data": None, "message": msg + "\n"}
    assert "dev0" not in pve.containers[120].config


def test_device_passthrough_with_root_ticket(pve):
    px = root_client(pve)
    upid = px.nodes("pve").lxc.post(**CREATE, dev0="/dev/nvidia0,gid=44", dev1="path=/dev/nvidia-uvm,mode=0666")
    assert UPID_RE.fullmatch(upid).group(3) == "root@pam"
    assert wait(px, upid)["exitstatus"] == "OK"
    px.nodes("pve").lxc(120).config.put(dev2="/dev/nvidiactl,deny-write=true")
    conf = px.nodes("pve").lxc(120).config.get()
    # written the way PVE writes property strings: default key bare, booleans 1/0
    assert (conf["dev0"], conf["dev1"], conf["dev2"]) == (
        "/dev/nvidia0,gid=44", "/dev/nvidia-uvm,mode=0666", "/dev/nvidiactl,deny-write=1")
    # raw lxc.* keys are refused by the schema even for root@pam
    assert refused(lambda: px.nodes("pve").lxc(120).config.put(
        **{"lxc.cgroup2.devices.allow": "c 195:* rwm"})).status_code == 400
    # a ticket needs the CSRF header on anything but GET
    ticket, csrf = px.get_tokens()
    cookies = {"PVEAuthCookie": ticket}
    assert raw(pve, "GET", "/nodes/pve/lxc/120/config", auth=None, cookies=cookies).status_code == 200
    r = raw(pve, "PUT", "/nodes/pve/lxc/120/config", auth=None, cookies=cookies, data={"cores": 2})
    assert (r.status_code, r.reason, r.content) == (401, "Permission denied - invalid csrf token", b"")
    r = raw(pve, "PUT", "/nodes/pve/lxc/120/config", auth=None, cookies=cookies, data={"cores": 2},
            headers={"CSRFPreventionToken": csrf})
    assert r.status_code == 200 and r.json() == {"data": None}


def test_missing_privilege_names_path_and_privilege(pve):
    acl = {k: set(v) for k, v in PROV_ACL.items()}
    acl["/vms/120"] -= {"VM.PowerMgmt", "VM.Config.CPU"}
    pve.add_token("prov@pve!narrow", "narrow-secret", acl=acl)
    narrow = token_client(pve, "prov@pve!narrow", "narrow-secret")
    exc = refused(lambda: narrow.nodes("pve").lxc.post(**CREATE))
    assert (exc.status_code, exc.content) == (403, "Permission check failed (/vms/120, VM.Config.CPU)")
    wait(token_client(pve), token_client(pve).nodes("pve").lxc.post(**CREATE))
    assert refused(lambda: narrow.nodes("pve").lxc(120).status.start.post()).content == \
        "Permission check failed (/vms/120, VM.PowerMgmt)"
    # privsep: the token gets the intersection with its user's privileges
    pve.add_user("prov@pve", acl={"/vms": {"VM.Audit"}})
    exc = refused(lambda: token_client(pve).nodes("pve").lxc(120).status.start.post())
    assert exc.content == "Permission check failed (/vms/120, VM.PowerMgmt)"
    pve.add_user("prov@pve", acl=PROV_ACL)
    # a storage without Datastore.AllocateSpace
    other = dict(CREATE, vmid=121, rootfs="local:8")
    pve.add_token("wide@pve!tok", "wide-secret", acl={**PROV_ACL, "/vms": CT_PRIVS})
    wide = token_client(pve, "wide@pve!tok", "wide-secret")
    assert refused(lambda: wide.nodes("pve").lxc.post(**other)).content == \
        "Permission check failed (/storage/local, Datastore.AllocateSpace)"
    # create's VM.Allocate check is inside the handler and raises without a path
    # (pve-container create_vm: check(..., noerr) then raise_perm_exc()); DELETE's is the schema's
    px = token_client(pve)
    assert refused(lambda: px.nodes("pve").lxc.post(**dict(CREATE, vmid=121))).content == "Permission check failed"
    assert refused(lambda: narrow.nodes("pve").lxc(121).delete()).content == \
        "Permission check failed (/vms/121, VM.Allocate)"
    # 'any' checks list the privileges joined with |
    pve.add_storage("tank", "zfspool", ("images", "rootdir"))
    assert refused(lambda: narrow.nodes("pve").storage("tank").content.get()).content == \
        "Permission check failed (/storage/tank, Datastore.Audit|Datastore.AllocateSpace)"
    assert refused(lambda: wide.nodes("pve").lxc(120).config.put(features="keyctl=1,nesting=1")).content == \
        "Permission check failed (changing feature flags (except nesting) is only allowed for root@pam)"


def test_foreign_vmid_already_exists(pve):
    pve.add_container(120, {"hostname": "someone-elses", "memory": "2048", "rootfs": "local-lvm:vm-120-disk-0,size=8G",
                            "lxc": [["lxc.cgroup2.devices.allow", "c 195:* rwm"]]}, foreign=True)
    px = token_client(pve)
    exc = refused(lambda: px.nodes("pve").lxc.post(**CREATE))
    assert (exc.status_code, exc.status_message, exc.content) == (
        500, "Internal Server Error", "CT 120 already exists on node 'pve'")
    r = raw(pve, "POST", "/nodes/pve/lxc", data=CREATE)
    assert r.json() == {"data": None, "message": "CT 120 already exists on node 'pve'\n"}
    conf = px.nodes("pve").lxc(120).config.get()
    assert conf["memory"] == 2048 and conf["lxc"] == [["lxc.cgroup2.devices.allow", "c 195:* rwm"]]
    assert pve.containers[120].foreign
    pve.add_token("auditor@pve!tok", "any-secret", acl={"/vms": {"VM.Audit"}})
    exc = refused(lambda: token_client(pve, "auditor@pve!tok", "any-secret").nodes("pve").lxc(999).config.get())
    assert (exc.status_code, exc.content) == (500, "Configuration file 'nodes/pve/lxc/999.conf' does not exist")


def test_start_then_running_with_an_address(pve):
    px = token_client(pve)
    wait(px, px.nodes("pve").lxc.post(**CREATE))
    ct = px.nodes("pve").lxc(120)
    assert ct.status.current.get()["status"] == "stopped"
    assert ct.interfaces.get() is None  # no network namespace before start
    upid = ct.status.start.post()
    assert UPID_RE.fullmatch(upid).group(1) == "vzstart"
    assert wait(px, upid)["exitstatus"] == "OK"
    current = ct.status.current.get()
    assert current["status"] == "running" and current["name"] == "ollama" and current["maxmem"] == 8192 * 1024**2
    eth0 = next(i for i in ct.interfaces.get() if i["name"] == "eth0")
    assert eth0["inet"] == "10.10.10.120/24"
    assert eth0["hwaddr"] == re.search(r"hwaddr=([^,]+)", ct.config.get()["net0"]).group(1).lower()
    assert eth0["ip-addresses"] == [{"ip-address": "10.10.10.120", "ip-address-type": "inet", "prefix": 24}]
    assert refused(lambda: ct.status.start.post()).content == "CT 120 already running"
    assert wait(px, ct.status.shutdown.post(timeout=30))["exitstatus"] == "OK"
    assert ct.status.current.get()["status"] == "stopped"


def test_failed_tasks_report_exitstatus_and_log(pve):
    px = token_client(pve)
    wait(px, px.nodes("pve").lxc.post(**CREATE))
    pve.fail_next("vzstart", "startup for container '120' failed",
                  log=["run_buffer: 571 Script exited with status 1"])  # representative line
    upid = px.nodes("pve").lxc(120).status.start.post()
    status = wait(px, upid)
    assert (status["status"], status["exitstatus"]) == ("stopped", "startup for container '120' failed")
    log = px.nodes("pve").tasks(upid).log.get()
    assert log == [{"n": 1, "t": "run_buffer: 571 Script exited with status 1"},
                   {"n": 2, "t": "TASK ERROR: startup for container '120' failed"}]
    assert Tasks.decode_log(log).splitlines()[-1] == "TASK ERROR: startup for container '120' failed"
    assert raw(pve, "GET", f"/nodes/pve/tasks/{upid}/log", params={"start": 1}).json() == {
        "data": [{"n": 2, "t": "TASK ERROR: startup for container '120' failed"}], "total": 2}
    assert pve.containers[120].status == "stopped"
    # storage full on create (the text is representative), and a template that is not there
    pve.storages["local-lvm"].avail = 4 * 1024**3
    pve.add_token("wide@pve!tok", "wide-secret", acl={**PROV_ACL, "/vms": CT_PRIVS})
    wide = token_client(pve, "wide@pve!tok", "wide-secret")
    full = wait(wide, wide.nodes("pve").lxc.post(**dict(CREATE, vmid=121)))
    assert full["exitstatus"] == "unable to create CT 121 - no space left on device"
    missing = wait(wide, wide.nodes("pve").lxc.post(**dict(CREATE, vmid=122, rootfs="local-lvm:1",
                                                           ostemplate="local:vztmpl/nope.tar.zst")))
    assert missing["exitstatus"] == "unable to create CT 122 - can't find file 'local:vztmpl/nope.tar.zst'"
    assert set(pve.containers) == {120}  # failed creates leave nothing behind
    assert pve.storages["local-lvm"].avail == 4 * 1024**3


def test_unknown_path_or_method_is_501(pve):
    px = token_client(pve)
    exc = refused(lambda: px.foo.get())
    assert (exc.status_code, exc.content) == (501, "Method 'GET /foo' not implemented")
    r = raw(pve, "GET", "/foo")
    assert (r.status_code, r.reason) == (501, "Method 'GET /foo' not implemented")
    assert r.json() == {"data": None, "message": "Method 'GET /foo' not implemented"}
    assert refused(lambda: px.version.post()).content == "Method 'POST /version' not implemented"
    # in the schema, not served by the double: 501, not a fake answer
    assert refused(lambda: px.nodes("pve").hardware.pci.get()).status_code == 501
    # a body on GET
    r = raw(pve, "GET", "/version", data="x=1", headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert (r.status_code, r.text) == (501, "Unexpected content for method 'GET'")


def test_bad_credentials_are_401_with_an_empty_body(pve):
    exc = refused(lambda: token_client(pve, secret="wrong").version.get())
    assert (exc.status_code, exc.content) == (401, "Authentication failed!")
    r = raw(pve, "GET", "/version", auth=None)
    assert (r.status_code, r.reason, r.content) == (401, "No ticket", b"")
    r = raw(pve, "GET", "/version", auth="PVEAPIToken=nobody@pve!x=y")
    assert (r.status_code, r.reason, r.content) == (401, "Authentication failed!", b"")
    with pytest.raises(AuthenticationError):
        proxmoxer.ProxmoxAPI(pve.host, port=pve.port, user="root@pam", password="wrong", verify_ssl=pve.ca_path)
    # the delay is configurable: a real server waits about 3 s, the double's default too
    assert PVEDouble().auth_failure_delay == 3.0
    pve.auth_failure_delay = 0.3
    t0 = time.monotonic()
    assert raw(pve, "GET", "/version", auth=None).status_code == 401
    assert time.monotonic() - t0 >= 0.3


def test_order_of_checks(pve):
    pve.add_token("nobody@pve!tok", "t-secret", acl={})
    nobody = "PVEAPIToken=nobody@pve!tok=t-secret"
    # auth before route
    assert raw(pve, "POST", "/nope", auth="PVEAPIToken=nobody@pve!tok=bad").status_code == 401
    # route before permission
    assert raw(pve, "POST", "/nope", auth=nobody).status_code == 501
    # permission before parameter validation
    r = raw(pve, "POST", "/nodes/pve/lxc/120/status/start", auth=nobody, data={"foo": "1"})
    assert (r.status_code, r.reason) == (403, "Permission check failed (/vms/120, VM.PowerMgmt)")
    # parameter validation before the handler (CT 120 does not exist)
    r = raw(pve, "POST", "/nodes/pve/lxc/120/status/start", data={"foo": "1"})
    assert (r.status_code, r.json()["errors"]) == (400, {
        "foo": "property is not defined in schema and the schema does not allow additional properties"})
    r = raw(pve, "POST", "/nodes/pve/lxc/120/status/start")
    assert (r.status_code, r.reason) == (500, "Configuration file 'nodes/pve/lxc/120.conf' does not exist")
    # a parameter repeating the URI with another value
    r = raw(pve, "GET", "/nodes/pve/lxc/120/config", params={"vmid": "121"})
    assert r.status_code == 400 and r.json()["errors"] == {
        "vmid": "duplicate parameter (already defined in URI) with conflicting values!"}
    # an unknown node cannot be proxied to (text after the dash representative)
    r = raw(pve, "GET", "/nodes/pve2/lxc")
    assert r.status_code == 500 and r.reason.startswith("hostname lookup 'pve2' failed - ")


def test_task_status_and_log_rules(pve):
    pve.task_seconds = 0.5  # long enough to look at a running task
    px = token_client(pve)
    upid = px.nodes("pve").lxc.post(**CREATE)
    first = px.nodes("pve").tasks(upid).status.get()
    assert first["status"] == "running" and "exitstatus" not in first
    assert {k: first[k] for k in ("node", "type", "id", "user")} == {
        "node": "pve", "type": "vzcreate", "id": "120", "user": "prov@pve"}
    assert [first["pid"], first["pstart"], first["starttime"]] == [int(x, 16) for x in upid.split(":")[2:5]]
    assert raw(pve, "GET", f"/nodes/pve/tasks/{upid}/log").json() == {"data": [{"n": 1, "t": "no content"}],
                                                                      "total": 1}
    wait(px, upid)
    assert px.nodes("pve").tasks(upid).log.get() == [{"n": 1, "t": "TASK OK"}]
    assert raw(pve, "GET", "/nodes/pve/tasks/nonsense/status").json()["errors"] == {
        "upid": "unable to parse worker upid"}
    other = upid.replace(":vzcreate:", ":vzstart:")
    assert raw(pve, "GET", f"/nodes/pve/tasks/{other}/status").json()["errors"] == {"upid": "no such task"}
    # someone else's task needs Sys.Audit on the node
    pve.add_token("watch@pve!tok", "w-secret", acl={})
    r = raw(pve, "GET", f"/nodes/pve/tasks/{upid}/status", auth="PVEAPIToken=watch@pve!tok=w-secret")
    assert (r.status_code, r.reason) == (403, "Permission check failed (/nodes/pve, Sys.Audit)")


def test_templates_listed_and_downloaded(pve):
    px = token_client(pve)
    listed = px.nodes("pve").storage("local").content.get(content="vztmpl")
    assert [v["volid"] for v in listed] == [TEMPLATE] and listed[0]["format"] == "tzst"
    ubuntu = "ubuntu-24.04-standard_24.04-2_amd64.tar.zst"
    assert ubuntu in [a["template"] for a in px.nodes("pve").aplinfo.get()]
    upid = px.nodes("pve").aplinfo.post(storage="local", template=ubuntu)
    assert UPID_RE.fullmatch(upid).groups() == ("download", ubuntu, TOKEN)
    assert wait(px, upid)["exitstatus"] == "OK"
    assert f"local:vztmpl/{ubuntu}" in [v["volid"] for v in px.nodes("pve").storage("local").content.get()]
    assert refused(lambda: px.nodes("pve").aplinfo.post(storage="local", template="nope.tar.zst")).errors == {
        "template": "no such template"}
    assert refused(lambda: px.nodes("pve").aplinfo.post(storage="local-lvm", template=ubuntu)).content == \
        "Permission check failed (/storage/local-lvm, Datastore.AllocateTemplate)"
    storages = {s["storage"]: s for s in px.nodes("pve").storage.get(content="vztmpl")}
    assert list(storages) == ["local"] and storages["local"]["content"] == "backup,iso,vztmpl"


def test_config_update_digest_and_destroy(pve):
    px = token_client(pve)
    wait(px, px.nodes("pve").lxc.post(**CREATE))
    ct = px.nodes("pve").lxc(120)
    digest = ct.config.get()["digest"]
    assert ct.config.put(cores=8, memory=16384, delete="description", digest=digest) is None
    conf = ct.config.get()
    assert (conf["cores"], conf["memory"], "description" in conf) == (8, 16384, False)
    assert refused(lambda: ct.config.put(cores=2, digest=digest)).content == \
        "detected modified configuration - file changed by other user? Try again."
    assert refused(lambda: ct.config.put(cores=2, delete="cores")).errors == {
        "delete": "you can't use '-cores' and -delete cores' at the same time"}
    # JSON bodies work the same
    r = raw(pve, "PUT", "/nodes/pve/lxc/120/config", json={"cores": 2, "onboot": False})
    assert r.status_code == 200 and (ct.config.get()["cores"], ct.config.get()["onboot"]) == (2, 0)
    wait(px, ct.status.start.post())
    assert refused(lambda: ct.delete()).content == "unable to destroy CT 120 - container is running"
    assert wait(px, ct.delete(force=1))["exitstatus"] == "OK"
    assert 120 not in pve.containers
    assert pve.storages["local-lvm"].volumes == {}


def test_nextid_index_and_permissions(pve):
    px = token_client(pve)
    assert px.cluster.nextid.get() == "100"  # a JSON string, as PVE sends it
    pve.add_container(100, {"hostname": "a"})
    pve.add_vm(101)
    assert px.cluster.nextid.get() == "102"
    assert refused(lambda: px.cluster.nextid.get(vmid=101)).errors == {"vmid": "VM 101 already exists"}
    assert px.nodes("pve").lxc.get() == []  # no VM.Audit on /vms/100
    perms = px.access.permissions.get()
    assert perms["/vms/120"] == {p: 1 for p in sorted(CT_PRIVS)}
    assert px.nodes("pve").status.get()["cpuinfo"]["cpus"] == 16
    assert [r["type"] for r in px.cluster.resources.get(type="vm")] == []


def test_request_log_holds_no_secrets(pve):
    px = root_client(pve)
    wait(px, px.nodes("pve").lxc.post(**CREATE, password="container-root-pw"))
    token_client(pve).version.get()
    log = pve.requests
    assert log[0] == ("POST", "/access/ticket", {"username": "root@pam", "password": "<redacted>"})
    method, path, params = log[1]
    assert (method, path, params["password"], params["hostname"]) == (
        "POST", "/nodes/pve/lxc", "<redacted>", "ollama")
    text = repr(log)
    for secret in (ROOT_PW, "container-root-pw", SECRET, px.get_tokens()[0], px.get_tokens()[1]):
        assert secret not in text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl command")
def test_certificates_from_the_openssl_command(monkeypatch):
    # the path taken where `cryptography` is not installed
    monkeypatch.setattr(pve_double, "make_certificates", pve_double._certs_openssl)
    with PVEDouble(auth_failure_delay=0) as double:
        double.add_token(TOKEN, SECRET, acl=PROV_ACL)
        assert token_client(double).version.get()["version"]
        assert double.internal_errors == []


# ---- file-backed mode (the pmxcfs model) -------------------------------------------------


@pytest.fixture
def fpve(tmp_path):
    with PVEDouble(task_seconds=0.1, auth_failure_delay=0, config_dir=tmp_path / "etc-pve") as double:
        double.add_token(TOKEN, SECRET, privsep=True, acl=PROV_ACL)
        double.set_root_password(ROOT_PW)
        yield double
        assert double.internal_errors == []


def conf_path(pve: PVEDouble, vmid: int, node: str = "pve") -> Path:
    return pve.config_dir / "nodes" / node / "lxc" / f"{vmid}.conf"


def status_text(pve: PVEDouble, vmid: int) -> str:
    return (pve.config_dir / ".standin" / f"{vmid}.status").read_text()


def test_file_backed_round_trip(fpve):
    px = root_client(fpve)
    upid = px.nodes("pve").lxc.post(**{**CREATE, "description": "ollama test: GPU \u00fc\nsecond line"},
                                     dev0="/dev/nvidia0,gid=44")
    # create_and_lock_config: the file exists at once, holding only the lock
    assert conf_path(fpve, 120).read_text() == "lock: create\n"
    wait(px, upid)
    text = conf_path(fpve, 120).read_text()
    # PVE's file: description as encode_text()-ed comment lines on top (':' and non-ASCII
    # escaped), then the keys sorted
    assert re.fullmatch(
        "#ollama test%3A GPU %C3%BC\n#second line\narch: amd64\ncores: 4\ndev0: /dev/nvidia0,gid=44\n"
        "features: nesting=1\nhostname: ollama\nmemory: 8192\n"
        "net0: name=eth0,bridge=vmbr0,hwaddr=BC:24:11(:[0-9A-F]{2}){3},ip=dhcp,type=veth\n"
        "onboot: 1\nostype: debian\nrootfs: local-lvm:vm-120-disk-0,size=16G\nswap: 0\ntags: gpu;ollama\n"
        "unprivileged: 1\n", text), text
    conf = px.nodes("pve").lxc(120).config.get()
    # read back as PVE reads it: one newline per comment line, the digest is the file's SHA-1
    assert conf["description"] == "ollama test: GPU \u00fc\nsecond line\n"
    assert conf["digest"] == hashlib.sha1(text.encode()).hexdigest()
    assert (conf["cores"], conf["onboot"], conf["dev0"]) == (4, 1, "/dev/nvidia0,gid=44")
    parsed = pve_conf.parse_pct_config(text, 120)
    assert parsed.warnings == [] and set(parsed.main) == set(conf) - {"digest"}
    # the run state, for the node's pct
    assert status_text(fpve, 120) == "stopped\n"
    wait(px, px.nodes("pve").lxc(120).status.start.post())
    assert status_text(fpve, 120) == "running\n"
    assert conf_path(fpve, 120).read_text() == text  # starting does not touch the config


def test_file_backed_external_edit_is_what_get_config_returns(fpve):
    px = root_client(fpve)
    wait(px, px.nodes("pve").lxc.post(**CREATE))
    ct = px.nodes("pve").lxc(120)
    old_digest = ct.config.get()["digest"]
    path = conf_path(fpve, 120)
    # edited on the node by hand, the way raw lxc.* lines get there (PVE < 8.1 passthrough)
    path.write_text(path.read_text().replace("cores: 4\n", "cores: 2\n")
                    + "lxc.cgroup2.devices.allow: c 195:* rwm\n"
                    + "lxc.mount.entry = /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n"
                    + "lxc.rootfs.path: /somewhere\n")
    conf = ct.config.get()
    assert conf["cores"] == 2
    assert conf["lxc"] == [["lxc.cgroup2.devices.allow", "c 195:* rwm"],
                           ["lxc.mount.entry", "/dev/nvidia0 dev/nvidia0 none bind,optional,create=file"]]
    assert conf["digest"] != old_digest
    assert fpve.config_warnings == ["vm 120 - lxc.rootfs.path: lxc.rootfs.path is auto generated from rootfs"]
    # reading did not rewrite the hand-written file
    assert "lxc.rootfs.path: /somewhere" in path.read_text()
    # a client holding the old digest is refused, as on PVE
    assert refused(lambda: ct.config.put(memory=4096, digest=old_digest)).content == \
        "detected modified configuration - file changed by other user? Try again."
    ct.config.put(memory=4096, digest=conf["digest"])
    text = path.read_text()
    # written back PVE's way: keys sorted, then the lxc.* lines as 'key: value' in their order
    assert text.endswith("memory: 4096\nnet0: " + conf["net0"] + "\nonboot: 1\nostype: debian\n"
                         "rootfs: local-lvm:vm-120-disk-0,size=16G\nswap: 0\ntags: gpu;ollama\nunprivileged: 1\n"
                         "lxc.cgroup2.devices.allow: c 195:* rwm\n"
                         "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file\n")
    assert "cores: 2\n" in text and "lxc.rootfs.path" not in text


def test_file_backed_destroy_removes_the_file(fpve):
    px = token_client(fpve)
    wait(px, px.nodes("pve").lxc.post(**CREATE))
    wait(px, px.nodes("pve").lxc(120).status.start.post())
    assert conf_path(fpve, 120).exists() and status_text(fpve, 120) == "running\n"
    assert wait(px, px.nodes("pve").lxc(120).delete(force=1))["exitstatus"] == "OK"
    assert not conf_path(fpve, 120).exists()
    assert not (fpve.config_dir / ".standin" / "120.status").exists()
    assert refused(lambda: px.nodes("pve").lxc(120).config.get()).content == \
        "Configuration file 'nodes/pve/lxc/120.conf' does not exist"


def test_file_backed_files_made_and_removed_on_the_node(fpve):
    path = conf_path(fpve, 130)
    path.write_text("#made by hand\narch: amd64\nhostname: byhand\nmemory: 1024\nostype: debian\n"
                    "rootfs: local-lvm:vm-130-disk-0,size=8G\nfoo: bar\n"
                    "\n[pve:pending]\nmemory: 2048\n"
                    "\n[before-gpu]\nhostname: byhand\nmemory: 512\nsnaptime: 1700000000\n")
    px = root_client(fpve)
    assert [(c["vmid"], c["status"], c["name"]) for c in px.nodes("pve").lxc.get()] == [(130, "stopped", "byhand")]
    conf = px.nodes("pve").lxc(130).config.get()
    # an unknown key is kept (PVE warns and keeps it); pending values are not applied
    assert (conf["description"], conf["memory"], conf["foo"]) == ("made by hand\n", 1024, "bar")
    assert fpve.config_warnings == ["vm 130 - unable to parse value of 'foo' - unknown setting 'foo'"]
    snap = px.nodes("pve").lxc(130).config.get(snapshot="before-gpu")
    assert (snap["memory"], snap["snaptime"]) == (512, 1700000000)
    # a change through the API keeps the pending and snapshot sections
    px.nodes("pve").lxc(130).config.put(cores=2)
    assert path.read_text().endswith("\n[pve:pending]\nmemory: 2048\n"
                                     "\n[before-gpu]\nhostname: byhand\nmemory: 512\nsnaptime: 1700000000\n")
    path.unlink()
    assert px.nodes("pve").lxc.get() == []
    assert 130 not in fpve.containers


def test_file_backed_call_in_process(fpve):
    fpve.add_container(140, {"hostname": "direct", "memory": 512})
    assert conf_path(fpve, 140).read_text() == "hostname: direct\nmemory: 512\n"
    assert status_text(fpve, 140) == "stopped\n"
    assert fpve.call("PUT", "/nodes/pve/lxc/140/config", {"dev0": "/dev/nvidia0,gid=44"}) is None
    assert "dev0: /dev/nvidia0,gid=44\n" in conf_path(fpve, 140).read_text()
    with pytest.raises(pve_double.ApiError) as info:
        fpve.call("PUT", "/nodes/pve/lxc/140/config", {"dev1": "/dev/x,mode=999"})
    assert (info.value.status, info.value.errors) == (400, {
        "dev1": "invalid format - format error\ndev1.mode: value does not match the regex pattern\n"})
    with pytest.raises(pve_double.ApiError) as info:  # write_pct_config's refusal of a newline
        fpve.call("PUT", "/nodes/pve/lxc/140/config", {"entrypoint": "/sbin/init\nx"})
    assert info.value.message == "detected invalid newline inside property 'entrypoint'\n"
    # a token is refused devN, root@pam (what pct runs as) is not
    fpve.add_container(120, {"hostname": "tokens", "memory": 512})
    with pytest.raises(pve_double.ApiError) as info:
        fpve.call("PUT", "/nodes/pve/lxc/120/config", {"dev1": "/dev/nvidiactl"}, authid="prov@pve!ci")
    assert (info.value.status, info.value.message) == (
        403, "Permission check failed (configuring device passthrough is only allowed for root@pam)\n")
    # a second double on the same directory (what pct builds on the node) sees the same
    other = PVEDouble(config_dir=fpve.config_dir, task_seconds=0)
    assert other.call("GET", "/nodes/pve/lxc/140/config")["dev0"] == "/dev/nvidia0,gid=44"


def test_pve_conf_text_codec_and_sections():
    assert pve_conf.encode_text("a: b%c\tü") == "a%3A b%c%09%C3%BC"
    assert pve_conf.decode_text("a%3A b%25c%09%C3%BC") == "a: b%c\tü"
    raw = ("#line one\n#\n#line three\nmemory: 512\nlxc.idmap: u 0 100000 65536\n"
           "lxc.aa_profile: unconfined\nbogus line\ndelete: memory\n")
    parsed = pve_conf.parse_pct_config(raw, 101)
    assert parsed.main == {"description": "line one\n\nline three\n", "memory": "512",
                           "lxc": [["lxc.idmap", "u 0 100000 65536"], ["lxc.aa_profile", "unconfined"]]}
    assert parsed.warnings == [
        "vm 101 - lxc.aa_profile is deprecated and was renamed to lxc.apparmor.profile",
        "vm 101 - unable to parse config: bogus line",
        "vm 101 - property 'delete' is only allowed in [pve:pending]"]
    text = pve_conf.write_pct_config(parsed.main, {"delete": "swap"}, {"s1": {"memory": 256}})
    assert text == ("#line one\n#\n#line three\nmemory: 512\nlxc.idmap: u 0 100000 65536\n"
                    "lxc.aa_profile: unconfined\n\n[pve:pending]\ndelete: swap\n\n[s1]\nmemory: 256\n")
    with pytest.raises(ValueError, match="detected invalid newline inside property 'hostname'"):
        pve_conf.write_pct_config({"hostname": "a\nb"})
