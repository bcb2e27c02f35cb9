#!/usr/bin/python
# -*- coding: utf-8 -*-
"""The life of one Proxmox VE container through the API, with proxmoxer (runs on the controller)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: pve_container
short_description: Create, configure, start, find the address of, or destroy one Proxmox VE container
description:
  - Drives the Proxmox VE API with proxmoxer (API token, or a root@pam password for a login ticket).
  - Creates the container when its vmid is free (the template is downloaded through the appliance
    index when the storage lacks it), marks it as the project's (description line and tag), updates
    changed options, starts it, waits for every task (UPID) until it stops and reports a failed
    task's exit status and the tail of its log, and finds the container's IPv4 address.
  - Refuses, before any change, a vmid that exists without the project's mark.
  - devN entries are set here only with a root@pam password (the API refuses them to every token);
    otherwise the node sets them (module pve_passthrough).
  - Secrets (token secret, password) are no_log and never part of a message or a result.
options:
  api:
    type: dict
    required: true
    description: How to reach and log in to the API.
    suboptions:
      host: {type: str, required: true}
      port: {type: int, default: 8006}
      user: {type: str, default: root@pam}
      token_id: {type: str, description: "user@realm!tokenid; env PROXMOX_TOKEN_ID"}
      token_secret: {type: str, description: "env PROXMOX_TOKEN_SECRET"}
      password: {type: str, description: "user's password (env PROXMOX_PASSWORD): a login ticket; root@pam's may set devN"}
      validate_certs: {type: bool, default: true}
      ca_cert: {type: path, description: the CA that signed the node's certificate (pve-root-ca.pem)}
  node: {type: str, required: true}
  vmid: {type: int, required: true}
  create: {type: dict, description: POST /nodes/NODE/lxc parameters (rendered)}
  config: {type: dict, description: devN entries to set through the API (ticket path only)}
  mark: {type: str, default: Managed by ollama-provisioner}
  tag: {type: str, default: ollama-provisioner}
  state: {type: str, choices: [query, present, started, absent], default: present,
          description: query only reads (and refuses a vmid without the mark)}
  restart: {type: bool, default: false, description: with state started, reboot a running container}
  task_timeout: {type: int, default: 600}
  address_timeout: {type: int, default: 120}
"""

import re
import time
from typing import Any

from ansible.module_utils.basic import AnsibleModule, env_fallback
from ansible.module_utils.pve_devices import device_entries, plan_devices

try:
    import requests
    from proxmoxer import ProxmoxAPI
    from proxmoxer.core import AuthenticationError, ResourceException
    from proxmoxer.tools import Tasks
except ImportError as exc:  # pragma: no cover - reported by the module
    IMPORT_ERROR: ImportError | None = exc
else:
    IMPORT_ERROR = None

# Options that only creation takes (or that PVE cannot change on an existing container).
CREATE_ONLY = {"vmid", "ostemplate", "rootfs", "unprivileged", "start", "storage", "password",
               "ssh-public-keys", "pool", "restore", "force", "unique"}
LOG_TAIL = 12


class Failure(Exception):
    """One clear line for the user; nothing after the failing step was done."""


def property_string(text: Any) -> dict[str, str]:
    """'name=eth0,bridge=vmbr0,ip=dhcp' (or a bare first value) as a dict, for comparison."""
    out: dict[str, str] = {}
    for i, part in enumerate(str(text).split(",")):
        key, sep, value = part.partition("=")
        if sep:
            out[key.strip()] = value.strip()
        elif part:
            out[f"_{i}"] = part.strip()
    return out


def same_value(key: str, want: Any, have: Any) -> bool:
    """PVE adds defaults to property strings (hwaddr, type=veth): what we ask for must be there."""
    if have is None:
        return False
    if re.fullmatch(r"net\d+|features", key):
        have_items = property_string(have)
        return all(have_items.get(k) == v for k, v in property_string(want).items())
    if key == "tags":
        return set(re.split(r"[;, ]+", str(want))) <= set(re.split(r"[;, ]+", str(have)))
    return str(want).strip() == str(have).strip()


class Pve:
    """A proxmoxer client with this module's error messages."""

    def __init__(self, module: AnsibleModule) -> None:
        p = module.params["api"]
        self.module = module
        self.node = module.params["node"]
        self.where = f"https://{p['host']}:{p['port']}"
        verify: Any = (p["ca_cert"] or True) if p["validate_certs"] else False
        kw: dict[str, Any] = {"port": p["port"], "verify_ssl": verify, "timeout": 30}
        # A password logs in for a ticket; only root@pam's may set devN through the API.
        self.password = bool(p["password"])
        self.ticket = self.password and p["user"] == "root@pam"
        try:
            if self.password:
                self.authid = p["user"]
                self.api = ProxmoxAPI(p["host"], user=p["user"], password=p["password"], **kw)
            else:
                token = p["token_id"] or ""
                user, _, name = token.rpartition("!")
                if not token or not name:
                    raise Failure("no Proxmox VE credential: set lxc_proxmox_api_token_id (user@realm!tokenid) and "
                                  "lxc_proxmox_api_token_secret (or PROXMOX_TOKEN_ID/PROXMOX_TOKEN_SECRET in the "
                                  "environment), or lxc_proxmox_api_password for root@pam")
                user = user or p["user"]
                self.authid = f"{user}!{name}"
                self.api = ProxmoxAPI(p["host"], user=user, token_name=name,
                                      token_value=p["token_secret"], **kw)
        except Exception as exc:  # noqa: BLE001 - turned into one line
            raise self.failure("log in", exc) from None

    @property
    def grantee(self) -> str:
        """How `pveum acl modify` names this credential."""
        return f"--tokens '{self.authid}'" if "!" in self.authid else f"--users '{self.authid}'"

    # -- errors ------------------------------------------------------------------------------------

    def failure(self, doing: str, exc: BaseException, needs: str = "") -> Failure:
        if isinstance(exc, Failure):
            return exc
        if requests is not None and isinstance(exc, requests.exceptions.SSLError):
            return Failure(f"TLS to the Proxmox VE API at {self.where} failed while trying to {doing} "
                           f"({_short(exc)}); give the node's CA with lxc_proxmox_ca_cert (/etc/pve/pve-root-ca.pem on "
                           "the node), or set lxc_proxmox_validate_certs: false on a trusted network")
        if requests is not None and isinstance(exc, (requests.exceptions.ConnectionError, requests.exceptions.Timeout)):
            return Failure(f"the Proxmox VE API at {self.where} is unreachable ({_short(exc)}); check "
                           "lxc_proxmox_api_host and lxc_proxmox_api_port, and that pveproxy runs on the node "
                           "(if the node uses a self-signed certificate, see lxc_proxmox_validate_certs)")
        if isinstance(exc, AuthenticationError) or (isinstance(exc, ResourceException) and exc.status_code == 401):
            who = f"{self.authid}'s password" if self.password else f"API token {getattr(self, 'authid', '')}"
            return Failure(f"the Proxmox VE API at {self.where} refused {who} (401 authentication failed); check "
                           "lxc_proxmox_api_token_id and its secret (not shown), or lxc_proxmox_api_password")
        if isinstance(exc, ResourceException):
            message = str(exc.content or exc.status_message).strip()
            if exc.status_code == 403:
                m = re.match(r"Permission check failed \((/[^,]*), ([^)]+)\)", message)
                if m:
                    path, privs = m.groups()
                    return Failure(f"{self.authid} lacks the privilege {privs} on {path} (403 from the Proxmox VE API "
                                   f"while trying to {doing}); grant it, for example `pveum acl modify {path} "
                                   f"{self.grantee} --roles PVEVMAdmin` (a role that holds {privs})")
                # A schema-level check with alternatives answers without path or privilege.
                hint = f"; it needs {needs}" if needs else ""
                return Failure(f"the Proxmox VE API refused to {doing} for {self.authid}: {message} (403){hint}")
            errors = "; ".join(f"{k}: {str(v).strip()}" for k, v in sorted((exc.errors or {}).items()))
            return Failure(f"the Proxmox VE API refused to {doing}: {message}"
                           + (f" ({errors})" if errors else "") + f" (HTTP {exc.status_code})")
        return Failure(f"the Proxmox VE API at {self.where}: could not {doing}: {_short(exc)}")

    def call(self, doing: str, fn: Any, *args: Any, needs: str = "", **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - turned into one line
            raise self.failure(doing, exc, needs) from None

    # -- reads ---------------------------------------------------------------------------------------

    def ct(self, vmid: int) -> Any:
        return self.api.nodes(self.node).lxc(vmid)

    def config(self, vmid: int) -> dict[str, Any] | None:
        """The container's config on this node, None when it has none."""
        try:
            return self.ct(vmid).config.get()
        except ResourceException as exc:
            if exc.status_code == 500 and "does not exist" in str(exc.content):
                return None
            raise self.failure(f"read CT {vmid}'s config", exc) from None
        except Exception as exc:  # noqa: BLE001
            raise self.failure(f"read CT {vmid}'s config", exc) from None

    def status(self, vmid: int) -> str:
        return self.call(f"read CT {vmid}'s status", self.ct(vmid).status.current.get)["status"]

    # -- tasks ---------------------------------------------------------------------------------------

    def wait(self, upid: str, what: str) -> None:
        """Wait for a task to stop; a failed one raises with its exit status and the tail of its log."""
        timeout = self.module.params["task_timeout"]
        status = self.call(f"wait for the task to {what}", Tasks.blocking_status, self.api, upid,
                           timeout=timeout, polling_interval=0.5)
        if status is None:
            raise Failure(f"the task to {what} ({upid}) was still running after {timeout}s; follow it on the node "
                          f"with `pvenode task log {upid}`")
        exit_status = status.get("exitstatus", "")
        if exit_status == "OK" or exit_status.startswith("WARNINGS"):
            return
        log = self.call("read the task log", self.api.nodes(self.node).tasks(upid).log.get, start=0, limit=5000)
        lines = [entry.get("t", "") for entry in sorted(log, key=lambda e: e.get("n", 0))]
        tail = " | ".join(line for line in lines[-LOG_TAIL:] if line)
        raise Failure(f"the task to {what} failed: {exit_status} (task {upid}; log tail: {tail})")


def _short(exc: BaseException) -> str:
    text = str(exc)
    m = re.search(r"\[SSL[^\]]*\][^()'\"]*|Connection refused|Name or service not known|timed out|"
                  r"certificate verify failed[^()'\"]*", text)
    return (m.group(0) if m else text.splitlines()[0] if text else type(exc).__name__).strip()[:200]


def owned(config: dict[str, Any], mark: str, tag: str) -> bool:
    tags = set(re.split(r"[;, ]+", str(config.get("tags", ""))))
    return tag in tags or mark in str(config.get("description", ""))


def ensure_template(pve: Pve, ostemplate: str, check: bool) -> bool:
    """The template volume exists in its storage; downloaded from the appliance index when missing."""
    storage, _, volname = ostemplate.partition(":")
    filename = volname.rsplit("/", 1)[-1]
    content = pve.call(f"list the templates in storage {storage}",
                       pve.api.nodes(pve.node).storage(storage).content.get, content="vztmpl")
    if any(item.get("volid") == ostemplate for item in content):
        return False
    index = pve.call("read the appliance index", pve.api.nodes(pve.node).aplinfo.get)
    if not any(item.get("template") == filename for item in index):
        raise Failure(f"template {ostemplate} is not in storage {storage!r} and not in the node's appliance index; "
                      f"upload it (`pveam download {storage} {filename}` after `pveam update`) or set lxc_template to "
                      "one `pveam list " + storage + "` shows")
    if check:
        return True
    upid = pve.call(f"download template {filename} into {storage}", pve.api.nodes(pve.node).aplinfo.post,
                    storage=storage, template=filename)
    pve.wait(upid, f"download template {filename} into {storage}")
    return True


def wanted_changes(want: dict[str, Any], have: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in want.items() if k not in CREATE_ONLY and not same_value(k, v, have.get(k))}


def address(pve: Pve, vmid: int, timeout: int) -> str:
    deadline = time.monotonic() + timeout
    seen = "no interfaces"
    while True:
        ifaces = pve.call(f"read CT {vmid}'s interfaces", pve.ct(vmid).interfaces.get) or []
        for iface in ifaces:
            if iface.get("name") == "lo":
                continue
            inet = iface.get("inet") or ""
            if inet and not inet.startswith("127."):
                return inet.split("/")[0]
        seen = ", ".join(f"{i.get('name')} {i.get('inet') or 'no IPv4'}" for i in ifaces if i.get("name") != "lo") \
            or "no interface but lo"
        if time.monotonic() >= deadline:
            raise Failure(f"CT {vmid} got no IPv4 address within {timeout}s (interfaces: {seen}); is a DHCP server "
                          "answering on its bridge, or set ip= in net0")
        time.sleep(1)


def run(module: AnsibleModule) -> dict[str, Any]:
    p = module.params
    vmid, check = p["vmid"], module.check_mode
    pve = Pve(module)
    result: dict[str, Any] = {"changed": False, "vmid": vmid, "node": pve.node, "changes": []}
    config = pve.config(vmid)
    if config is not None and not owned(config, p["mark"], p["tag"]):
        raise Failure(f"CT {vmid} on node {pve.node!r} (hostname {config.get('hostname', '?')!r}) was not created by "
                      f"ollama-provisioner (no {p['tag']!r} tag, no {p['mark']!r} in its description); nothing was "
                      "changed. Choose a free lxc_vmid (`pvesh get /cluster/nextid`)")

    if p["state"] == "query":
        result["status"] = "absent" if config is None else pve.status(vmid)
        return result

    if p["state"] == "absent":
        if config is None:
            return result
        result["changed"] = True
        result["changes"].append(f"destroy CT {vmid}")
        if check:
            return result
        if pve.status(vmid) == "running":
            upid = pve.call(f"stop CT {vmid}", pve.ct(vmid).status.stop.post)
            pve.wait(upid, f"stop CT {vmid}")
        upid = pve.call(f"destroy CT {vmid}", pve.ct(vmid).delete, purge=1)
        pve.wait(upid, f"destroy CT {vmid}")
        return result

    devices = dict(p["config"] or {})
    if devices and not pve.ticket:
        raise Failure("devN entries can only be set through the API by root@pam with a password (a token gets "
                      "403); leave them to the node (lxc_passthrough is applied with `pct set` over SSH)")
    create = dict(p["create"] or {})
    create["description"] = p["mark"] + (f"\n{create['description']}" if create.get("description") else "")
    create["tags"] = ";".join(sorted({p["tag"], *filter(None, re.split(r"[;, ]+", str(create.get("tags", ""))))}))
    if config is None:
        if ensure_template(pve, create["ostemplate"], check):
            result["changes"].append(f"download template {create['ostemplate']}")
        result["changes"].append(f"create CT {vmid}")
        result["changed"] = True
        result["created"] = True
        if check:
            result["status"] = "absent"
            return result
        storage = str(create.get("rootfs", "")).partition(":")[0]
        needs = (f"VM.Allocate on /vms/{vmid} (the schema's check), Datastore.AllocateSpace on /storage/{storage} "
                 f"and SDN.Use on the bridge; grant them, for example `pveum acl modify /vms/{vmid} {pve.grantee} "
                 "--roles PVEVMAdmin`")
        try:
            upid = pve.call(f"create CT {vmid}", pve.api.nodes(pve.node).lxc.post, vmid=vmid, needs=needs,
                            **{k: v for k, v in create.items() if k != "vmid"})
            pve.wait(upid, f"create CT {vmid}")
        except Failure as exc:
            if "already exists" in str(exc):
                raise Failure(f"lxc_vmid {vmid} is taken by a guest this project did not create ({exc}); choose a "
                              "free lxc_vmid (`pvesh get /cluster/nextid`)") from None
            raise
        config = pve.config(vmid) or {}
    else:
        if "unprivileged" in create and bool(int(create["unprivileged"])) != bool(int(config.get("unprivileged", 0))):
            raise Failure(f"CT {vmid} is {'un' if config.get('unprivileged') else ''}privileged and lxc_unprivileged "
                          "says otherwise; an existing container's privilege cannot change: destroy it "
                          "(`provision uninstall --target lxc --destroy`) or set lxc_unprivileged back")
        update = wanted_changes({k: v for k, v in create.items() if k not in ("description",)}, config)
        if update:
            result["changed"] = True
            result["changes"].append("set " + ", ".join(sorted(update)))
            if not check:
                pve.call(f"update CT {vmid}'s options {', '.join(sorted(update))}", pve.ct(vmid).config.put, **update)
                config = pve.config(vmid) or {}

    restart = p["restart"]
    if p["config"] is not None and pve.ticket:
        update, stale = plan_devices({k: str(v) for k, v in devices.items()}, device_entries(config))
        if update or stale:
            result["changed"] = True
            result["changes"].append("set device passthrough " + ", ".join(sorted(update) + [f"-{k}" for k in stale]))
            restart = True
            if not check:
                extra = {"delete": ",".join(stale)} if stale else {}
                pve.call(f"set CT {vmid}'s device passthrough", pve.ct(vmid).config.put, **update, **extra)

    status = pve.status(vmid) if not (check and result.get("created")) else "stopped"
    result["status"] = status
    if p["state"] == "started":
        if status != "running":
            result["changed"] = True
            result["changes"].append(f"start CT {vmid}")
            if not check:
                upid = pve.call(f"start CT {vmid}", pve.ct(vmid).status.start.post)
                pve.wait(upid, f"start CT {vmid}")
        elif restart:
            result["changed"] = True
            result["changes"].append(f"reboot CT {vmid} (its device passthrough changed)")
            if not check:
                upid = pve.call(f"reboot CT {vmid}", pve.ct(vmid).status.reboot.post)
                pve.wait(upid, f"reboot CT {vmid}")
        if not check or status == "running":
            result["status"] = "running"
            result["address"] = address(pve, vmid, p["address_timeout"])
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "api": {"type": "dict", "required": True, "options": {
                "host": {"type": "str", "required": True},
                "port": {"type": "int", "default": 8006},
                "user": {"type": "str", "default": "root@pam"},
                "token_id": {"type": "str", "fallback": (env_fallback, ["PROXMOX_TOKEN_ID"])},
                "token_secret": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PROXMOX_TOKEN_SECRET"])},
                "password": {"type": "str", "no_log": True, "fallback": (env_fallback, ["PROXMOX_PASSWORD"])},
                "validate_certs": {"type": "bool", "default": True},
                "ca_cert": {"type": "path"},
            }},
            "node": {"type": "str", "required": True},
            "vmid": {"type": "int", "required": True},
            "create": {"type": "dict"},
            "config": {"type": "dict"},
            "mark": {"type": "str", "default": "Managed by ollama-provisioner"},
            "tag": {"type": "str", "default": "ollama-provisioner"},
            "state": {"type": "str", "choices": ["query", "present", "started", "absent"], "default": "present"},
            "restart": {"type": "bool", "default": False},
            "task_timeout": {"type": "int", "default": 600},
            "address_timeout": {"type": "int", "default": 120},
        },
        supports_check_mode=True,
    )
    if IMPORT_ERROR is not None:
        module.fail_json(msg=f"the Proxmox VE backend needs proxmoxer and requests on the controller ({IMPORT_ERROR}); "
                             "install the provisioner's dependencies")
    try:
        module.exit_json(**run(module))
    except Failure as exc:
        module.fail_json(msg=str(exc))


if __name__ == "__main__":
    main()
