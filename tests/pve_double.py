"""A test double of the Proxmox VE API (PVE 9.1, ``/api2/json``), for tests only.

This is *not* Proxmox VE and it never talks to one.  It is a real HTTPS server
(stdlib ``http.server`` + ``ssl``, a ThreadingHTTPServer on 127.0.0.1 and a free
port, a throw-away CA and node certificate made per run for 127.0.0.1/localhost)
that answers the endpoints a provisioner uses to create and manage one LXC
container, so that the REAL client (proxmoxer + requests) can be driven against
it end to end: TLS verification, authentication headers, form encoding, status
lines, error envelopes, task polling.

Sources it is built from (nothing else):
- ``/work/shared/reference/pve-api-lxc.json``: the PVE 9.1 API schema extract
  (pve-docs api-viewer/apidata.js).  The parameter schemas of the served
  endpoints are embedded below (``_SCHEMA_JSON``, descriptions dropped) and a
  test checks them against that file whenever it is present.
- ``/work/shared/reference/proxmox-api.md``: wire behaviour (order of checks,
  envelopes, status lines, auth, UPIDs, task logs, privileges per endpoint and
  option, devN only for root@pam with a ticket).
- Where those two are silent, the simplest behaviour faithful to the
  pve-container / pve-common / pve-storage sources read while building this;
  each such place says so in a comment ("not in the reference").  Texts marked
  "representative" are plausible, not quoted.

What it checks (so a client that passes here has got these right):
- every parameter against the schema, generically: required, unknown keys with
  additionalProperties 0 (so raw ``lxc.*`` keys are refused), integer / number /
  boolean (top level only ``0``/``1``) / string, enum, pattern, min/max,
  minLength/maxLength, ``requires``, the registered string formats (pve-vmid,
  pve-node, dns-name, ...) and the property strings (net[n], rootfs, mp[n],
  dev[n], features, unused[n]) with their default keys and sub-key checks;
- the order auth (401) -> route (501) -> token allowed (403) -> permission
  (403) -> parameter validation (400) -> handler (500);
- API tokens (privsep intersection, ACL paths, deepest ACL entry wins), the
  root@pam ticket login with its CSRF header, the privilege checks listed in
  the reference (per option on create/PUT config), devN and the other
  root@pam-only options;
- tasks: UPIDs in the exact format, running -> stopped with an exitstatus, the
  task log with ``total``; failures injectable with ``fail_next``.

What it cannot prove:
- that a real Proxmox VE accepts the same calls, or answers them the same way
  beyond what the two sources describe; handler logic is reduced to the
  container life cycle (no pools, HA, restore, snapshots, pending changes,
  disk allocation or resize through PUT config, migration, replication,
  firewall, SDN zones other than ``localnetwork``, QEMU guests beyond a vmid
  that is taken); start/stop of a CT that does not exist is refused at once
  (a 500), where PVE may report it in the task instead;
- anything about the container itself: nothing is unpacked, started or
  networked.  Interface addresses are made up (a DHCP ``ip=`` gets
  10.10.10.<vmid>/24), devN paths are not checked against host devices, the
  OS type is guessed from the template file name, task logs hold only injected
  lines plus the final ``TASK OK`` / ``TASK ERROR:`` line;
- real timings (tasks take ``task_seconds``, the 401 delay is configurable;
  the real one is 3 s), ticket expiry (2 h on PVE), TFA, ticket signatures,
  roles/groups/propagate flags of the real ACL system, realms other than the
  user ids given to it;
- the real node's certificate chain (pve-root-ca + pve-ssl.pem) beyond its
  shape (a CA to trust and a node certificate signed by it);
- messages whose order depends on Perl hash order (the double sorts keys).

File-backed mode (``PVEDouble(config_dir=DIR)``), the pmxcfs model: every
container's config is also a real file ``DIR/nodes/<node>/lxc/<vmid>.conf`` in
PVE's own format (tests/pve_conf.py: description as ``#`` lines, keys sorted, raw
``lxc.*`` lines, ``[pve:pending]`` and snapshot sections kept), the way the API
and the ``pct`` CLI share one file on a real node.  The files are read back
before every request and written after it (create, PUT config, start/stop,
destroy removes the file), so an edit made on the "node" (the stand-in's ``pct
set``, a hand-written ``lxc.*`` line) is what GET config returns next; a
``<vmid>.conf`` that appears there is a container (stopped, foreign) and one
that disappears is gone.  GET config's digest is then the SHA-1 of the file, as
on PVE, and a description read back carries PVE's trailing newline ("x" comes
back as "x\n").  The run state of each container goes to
``DIR/.standin/<vmid>.status`` (``running``/``stopped``): the stand-in's own file,
not part of pmxcfs, that the node stand-in's ``pct exec``/``pct status`` read.
``call()`` runs one API call in-process without HTTP (what ``pct`` does on the
node: a CLI over the same API methods).  What it cannot prove beyond the rest:
pmxcfs's own rules (no locking between writers here, last writer wins; no size
limit; no cluster-wide view), pending changes (kept in the file, never applied).

Usage::

    with PVEDouble(task_seconds=0.2, auth_failure_delay=0) as pve:
        pve.add_token("prov@pve!ci", "9a3c...", privsep=True,
                      acl={"/vms/120": {"VM.Allocate"}, ...})
        client = proxmoxer.ProxmoxAPI(pve.host, port=pve.port, user="prov@pve",
                                      token_name="ci", token_value="9a3c...",
                                      verify_ssl=pve.ca_path)
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import hmac
import http.server
import ipaddress
import json
import os
import random
import re
import shutil
import ssl
import subprocess
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, NamedTuple
from urllib.parse import parse_qsl, unquote, urlsplit

try:
    from tests import pve_conf
except ImportError:  # copied next to pve_conf.py (the node stand-in's image)
    import pve_conf  # type: ignore[no-redef]

API_PREFIX = "/api2/json"
KiB, MiB, GiB, TiB = 1024, 1024**2, 1024**3, 1024**4

# --------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------

# Extract of /work/shared/reference/pve-api-lxc.json for the endpoints this double
# serves: keys 'description', 'typetext', 'format_description', 'verbose_description'
# and 'renderer' dropped (and the permissions' 'description'), everything else as in
# the file.  Regenerate with extract_schema(json.load(open(<that file>))).
# tests/test_pve_double.py checks this block against the file when it is present.
_SCHEMA_JSON = r"""
{
"/version GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": null, "parameters": {
}},
"/nodes GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": null, "parameters": {
}},
"/nodes/{node}/status GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/nodes/{node}", ["Sys.Audit"]]}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"}
}},
"/nodes/{node}/lxc GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"}
}},
"/nodes/{node}/lxc POST": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": "node", "parameters": {
  "arch": {"default": "amd64", "enum": ["amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"], "optional": 1, "type": "string"},
  "bwlimit": {"default": "restore limit from datacenter or storage config", "minimum": "0", "optional": 1, "type": "number"},
  "cmode": {"default": "tty", "enum": ["shell", "console", "tty"], "optional": 1, "type": "string"},
  "console": {"default": 1, "optional": 1, "type": "boolean"},
  "cores": {"maximum": 8192, "minimum": 1, "optional": 1, "type": "integer"},
  "cpulimit": {"default": 0, "maximum": 8192, "minimum": 0, "optional": 1, "type": "number"},
  "cpuunits": {"default": "cgroup v1: 1024, cgroup v2: 100", "maximum": 500000, "minimum": 0, "optional": 1, "type": "integer"},
  "debug": {"default": 0, "optional": 1, "type": "boolean"},
  "description": {"maxLength": 8192, "optional": 1, "type": "string"},
  "dev[n]": {"optional": 1, "type": "string", "format": {
    "deny-write": {"default": 0, "optional": 1, "type": "boolean"},
    "gid": {"minimum": 0, "optional": 1, "type": "integer"},
    "mode": {"optional": 1, "pattern": "0[0-7]{3}", "type": "string"},
    "path": {"default_key": 1, "format": "pve-lxc-dev-string", "optional": 1, "type": "string"},
    "uid": {"minimum": 0, "optional": 1, "type": "integer"}
  }},
  "entrypoint": {"default": "/sbin/init", "optional": 1, "pattern": "(?^:[^\\x00-\\x08\\x10-\\x1F\\x7F]+)", "type": "string"},
  "env": {"optional": 1, "pattern": "(?^:(?:\\w+=[^\\x00-\\x08\\x10-\\x1F\\x7F]*)(?:\\0\\w+=[^\\x00-\\x08\\x10-\\x1F\\x7F]*)*)", "type": "string"},
  "features": {"optional": 1, "type": "string", "format": {
    "force_rw_sys": {"default": 0, "optional": 1, "type": "boolean"},
    "fuse": {"default": 0, "optional": 1, "type": "boolean"},
    "keyctl": {"default": 0, "optional": 1, "type": "boolean"},
    "mknod": {"default": 0, "optional": 1, "type": "boolean"},
    "mount": {"optional": 1, "pattern": "(?^:[a-zA-Z0-9_; ]+)", "type": "string"},
    "nesting": {"default": 0, "optional": 1, "type": "boolean"}
  }},
  "force": {"optional": 1, "type": "boolean"},
  "ha-managed": {"default": 0, "optional": 1, "type": "boolean"},
  "hookscript": {"format": "pve-volume-id", "optional": 1, "type": "string"},
  "hostname": {"format": "dns-name", "maxLength": 255, "optional": 1, "type": "string"},
  "ignore-unpack-errors": {"optional": 1, "type": "boolean"},
  "lock": {"enum": ["backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted", "rollback", "snapshot", "snapshot-delete"], "optional": 1, "type": "string"},
  "memory": {"default": 512, "minimum": 16, "optional": 1, "type": "integer"},
  "mp[n]": {"optional": 1, "type": "string", "format": {
    "acl": {"optional": 1, "type": "boolean"},
    "backup": {"optional": 1, "type": "boolean"},
    "keepattrs": {"default": 0, "optional": 1, "type": "boolean"},
    "mountoptions": {"optional": 1, "pattern": "(?^:(?^:(discard|lazytime|noatime|nodev|noexec|nosuid))(;(?^:(discard|lazytime|noatime|nodev|noexec|nosuid)))*)", "type": "string"},
    "mp": {"format": "pve-lxc-mp-string", "type": "string"},
    "quota": {"optional": 1, "type": "boolean"},
    "replicate": {"default": 1, "optional": 1, "type": "boolean"},
    "ro": {"optional": 1, "type": "boolean"},
    "shared": {"default": 0, "optional": 1, "type": "boolean"},
    "size": {"format": "disk-size", "optional": 1, "type": "string"},
    "volume": {"default_key": 1, "format": "pve-lxc-mp-string", "type": "string"}
  }},
  "nameserver": {"format": "lxc-ip-with-ll-iface-list", "optional": 1, "type": "string"},
  "net[n]": {"optional": 1, "type": "string", "format": {
    "bridge": {"optional": 1, "pattern": "[-_.\\w\\d]+", "type": "string"},
    "firewall": {"optional": 1, "type": "boolean"},
    "gw": {"format": "ipv4", "optional": 1, "type": "string"},
    "gw6": {"format": "ipv6", "optional": 1, "type": "string"},
    "host-managed": {"optional": 1, "type": "boolean"},
    "hwaddr": {"format": "mac-addr", "optional": 1, "type": "string"},
    "ip": {"format": "pve-ipv4-config", "optional": 1, "type": "string"},
    "ip6": {"format": "pve-ipv6-config", "optional": 1, "type": "string"},
    "link_down": {"optional": 1, "type": "boolean"},
    "mtu": {"maximum": 65535, "minimum": 64, "optional": 1, "type": "integer"},
    "name": {"pattern": "[-_.\\w\\d]+", "type": "string"},
    "rate": {"optional": 1, "type": "number"},
    "tag": {"maximum": 4094, "minimum": 1, "optional": 1, "type": "integer"},
    "trunks": {"optional": 1, "pattern": "(?^:\\d+(?:;\\d+)*)", "type": "string"},
    "type": {"enum": ["veth"], "optional": 1, "type": "string"}
  }},
  "node": {"format": "pve-node", "type": "string"},
  "onboot": {"default": 0, "optional": 1, "type": "boolean"},
  "ostemplate": {"maxLength": 255, "type": "string"},
  "ostype": {"enum": ["debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos", "unmanaged"], "optional": 1, "type": "string"},
  "password": {"minLength": 5, "optional": 1, "type": "string"},
  "pool": {"format": "pve-poolid", "optional": 1, "type": "string"},
  "protection": {"default": 0, "optional": 1, "type": "boolean"},
  "restore": {"optional": 1, "type": "boolean"},
  "rootfs": {"optional": 1, "type": "string", "format": {
    "acl": {"optional": 1, "type": "boolean"},
    "mountoptions": {"optional": 1, "pattern": "(?^:(?^:(discard|lazytime|noatime|nodev|noexec|nosuid))(;(?^:(discard|lazytime|noatime|nodev|noexec|nosuid)))*)", "type": "string"},
    "quota": {"optional": 1, "type": "boolean"},
    "replicate": {"default": 1, "optional": 1, "type": "boolean"},
    "ro": {"optional": 1, "type": "boolean"},
    "shared": {"default": 0, "optional": 1, "type": "boolean"},
    "size": {"format": "disk-size", "optional": 1, "type": "string"},
    "volume": {"default_key": 1, "format": "pve-lxc-mp-string", "type": "string"}
  }},
  "searchdomain": {"format": "dns-name-list", "optional": 1, "type": "string"},
  "ssh-public-keys": {"optional": 1, "type": "string"},
  "start": {"default": 0, "optional": 1, "type": "boolean"},
  "startup": {"format": "pve-startup-order", "optional": 1, "type": "string"},
  "storage": {"default": "local", "format": "pve-storage-id", "optional": 1, "type": "string"},
  "swap": {"default": 512, "minimum": 0, "optional": 1, "type": "integer"},
  "tags": {"format": "pve-tag-list", "optional": 1, "type": "string"},
  "template": {"default": 0, "optional": 1, "type": "boolean"},
  "timezone": {"format": "pve-ct-timezone", "optional": 1, "type": "string"},
  "tty": {"default": 2, "maximum": 6, "minimum": 0, "optional": 1, "type": "integer"},
  "unique": {"optional": 1, "requires": "restore", "type": "boolean"},
  "unprivileged": {"default": 0, "optional": 1, "type": "boolean"},
  "unused[n]": {"optional": 1, "type": "string", "format": {
    "volume": {"default_key": 1, "format": "pve-volume-id", "type": "string"}
  }},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid} DELETE": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.Allocate"]]}, "proxyto": "node", "parameters": {
  "destroy-unreferenced-disks": {"optional": 1, "type": "boolean"},
  "force": {"default": 0, "optional": 1, "type": "boolean"},
  "node": {"format": "pve-node", "type": "string"},
  "purge": {"default": 0, "optional": 1, "type": "boolean"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/config GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.Audit"]]}, "proxyto": "node", "parameters": {
  "current": {"default": 0, "optional": 1, "type": "boolean"},
  "node": {"format": "pve-node", "type": "string"},
  "snapshot": {"format": "pve-configid", "maxLength": 40, "optional": 1, "type": "string"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/config PUT": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options"], "any", 1]}, "proxyto": "node", "parameters": {
  "arch": {"default": "amd64", "enum": ["amd64", "i386", "arm64", "armhf", "riscv32", "riscv64"], "optional": 1, "type": "string"},
  "cmode": {"default": "tty", "enum": ["shell", "console", "tty"], "optional": 1, "type": "string"},
  "console": {"default": 1, "optional": 1, "type": "boolean"},
  "cores": {"maximum": 8192, "minimum": 1, "optional": 1, "type": "integer"},
  "cpulimit": {"default": 0, "maximum": 8192, "minimum": 0, "optional": 1, "type": "number"},
  "cpuunits": {"default": "cgroup v1: 1024, cgroup v2: 100", "maximum": 500000, "minimum": 0, "optional": 1, "type": "integer"},
  "debug": {"default": 0, "optional": 1, "type": "boolean"},
  "delete": {"format": "pve-configid-list", "optional": 1, "type": "string"},
  "description": {"maxLength": 8192, "optional": 1, "type": "string"},
  "dev[n]": {"optional": 1, "type": "string", "format": {
    "deny-write": {"default": 0, "optional": 1, "type": "boolean"},
    "gid": {"minimum": 0, "optional": 1, "type": "integer"},
    "mode": {"optional": 1, "pattern": "0[0-7]{3}", "type": "string"},
    "path": {"default_key": 1, "format": "pve-lxc-dev-string", "optional": 1, "type": "string"},
    "uid": {"minimum": 0, "optional": 1, "type": "integer"}
  }},
  "digest": {"maxLength": 40, "optional": 1, "type": "string"},
  "entrypoint": {"default": "/sbin/init", "optional": 1, "pattern": "(?^:[^\\x00-\\x08\\x10-\\x1F\\x7F]+)", "type": "string"},
  "env": {"optional": 1, "pattern": "(?^:(?:\\w+=[^\\x00-\\x08\\x10-\\x1F\\x7F]*)(?:\\0\\w+=[^\\x00-\\x08\\x10-\\x1F\\x7F]*)*)", "type": "string"},
  "features": {"optional": 1, "type": "string", "format": {
    "force_rw_sys": {"default": 0, "optional": 1, "type": "boolean"},
    "fuse": {"default": 0, "optional": 1, "type": "boolean"},
    "keyctl": {"default": 0, "optional": 1, "type": "boolean"},
    "mknod": {"default": 0, "optional": 1, "type": "boolean"},
    "mount": {"optional": 1, "pattern": "(?^:[a-zA-Z0-9_; ]+)", "type": "string"},
    "nesting": {"default": 0, "optional": 1, "type": "boolean"}
  }},
  "hookscript": {"format": "pve-volume-id", "optional": 1, "type": "string"},
  "hostname": {"format": "dns-name", "maxLength": 255, "optional": 1, "type": "string"},
  "lock": {"enum": ["backup", "create", "destroyed", "disk", "fstrim", "migrate", "mounted", "rollback", "snapshot", "snapshot-delete"], "optional": 1, "type": "string"},
  "memory": {"default": 512, "minimum": 16, "optional": 1, "type": "integer"},
  "mp[n]": {"optional": 1, "type": "string", "format": {
    "acl": {"optional": 1, "type": "boolean"},
    "backup": {"optional": 1, "type": "boolean"},
    "keepattrs": {"default": 0, "optional": 1, "type": "boolean"},
    "mountoptions": {"optional": 1, "pattern": "(?^:(?^:(discard|lazytime|noatime|nodev|noexec|nosuid))(;(?^:(discard|lazytime|noatime|nodev|noexec|nosuid)))*)", "type": "string"},
    "mp": {"format": "pve-lxc-mp-string", "type": "string"},
    "quota": {"optional": 1, "type": "boolean"},
    "replicate": {"default": 1, "optional": 1, "type": "boolean"},
    "ro": {"optional": 1, "type": "boolean"},
    "shared": {"default": 0, "optional": 1, "type": "boolean"},
    "size": {"format": "disk-size", "optional": 1, "type": "string"},
    "volume": {"default_key": 1, "format": "pve-lxc-mp-string", "type": "string"}
  }},
  "nameserver": {"format": "lxc-ip-with-ll-iface-list", "optional": 1, "type": "string"},
  "net[n]": {"optional": 1, "type": "string", "format": {
    "bridge": {"optional": 1, "pattern": "[-_.\\w\\d]+", "type": "string"},
    "firewall": {"optional": 1, "type": "boolean"},
    "gw": {"format": "ipv4", "optional": 1, "type": "string"},
    "gw6": {"format": "ipv6", "optional": 1, "type": "string"},
    "host-managed": {"optional": 1, "type": "boolean"},
    "hwaddr": {"format": "mac-addr", "optional": 1, "type": "string"},
    "ip": {"format": "pve-ipv4-config", "optional": 1, "type": "string"},
    "ip6": {"format": "pve-ipv6-config", "optional": 1, "type": "string"},
    "link_down": {"optional": 1, "type": "boolean"},
    "mtu": {"maximum": 65535, "minimum": 64, "optional": 1, "type": "integer"},
    "name": {"pattern": "[-_.\\w\\d]+", "type": "string"},
    "rate": {"optional": 1, "type": "number"},
    "tag": {"maximum": 4094, "minimum": 1, "optional": 1, "type": "integer"},
    "trunks": {"optional": 1, "pattern": "(?^:\\d+(?:;\\d+)*)", "type": "string"},
    "type": {"enum": ["veth"], "optional": 1, "type": "string"}
  }},
  "node": {"format": "pve-node", "type": "string"},
  "onboot": {"default": 0, "optional": 1, "type": "boolean"},
  "ostype": {"enum": ["debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine", "gentoo", "nixos", "unmanaged"], "optional": 1, "type": "string"},
  "protection": {"default": 0, "optional": 1, "type": "boolean"},
  "revert": {"format": "pve-configid-list", "optional": 1, "type": "string"},
  "rootfs": {"optional": 1, "type": "string", "format": {
    "acl": {"optional": 1, "type": "boolean"},
    "mountoptions": {"optional": 1, "pattern": "(?^:(?^:(discard|lazytime|noatime|nodev|noexec|nosuid))(;(?^:(discard|lazytime|noatime|nodev|noexec|nosuid)))*)", "type": "string"},
    "quota": {"optional": 1, "type": "boolean"},
    "replicate": {"default": 1, "optional": 1, "type": "boolean"},
    "ro": {"optional": 1, "type": "boolean"},
    "shared": {"default": 0, "optional": 1, "type": "boolean"},
    "size": {"format": "disk-size", "optional": 1, "type": "string"},
    "volume": {"default_key": 1, "format": "pve-lxc-mp-string", "type": "string"}
  }},
  "searchdomain": {"format": "dns-name-list", "optional": 1, "type": "string"},
  "startup": {"format": "pve-startup-order", "optional": 1, "type": "string"},
  "swap": {"default": 512, "minimum": 0, "optional": 1, "type": "integer"},
  "tags": {"format": "pve-tag-list", "optional": 1, "type": "string"},
  "template": {"default": 0, "optional": 1, "type": "boolean"},
  "timezone": {"format": "pve-ct-timezone", "optional": 1, "type": "string"},
  "tty": {"default": 2, "maximum": 6, "minimum": 0, "optional": 1, "type": "integer"},
  "unprivileged": {"default": 0, "optional": 1, "type": "boolean"},
  "unused[n]": {"optional": 1, "type": "string", "format": {
    "volume": {"default_key": 1, "format": "pve-volume-id", "type": "string"}
  }},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/status/current GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.Audit"]]}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/status/start POST": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.PowerMgmt"]]}, "proxyto": "node", "parameters": {
  "debug": {"default": 0, "optional": 1, "type": "boolean"},
  "node": {"format": "pve-node", "type": "string"},
  "skiplock": {"optional": 1, "type": "boolean"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/status/stop POST": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.PowerMgmt"]]}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"},
  "overrule-shutdown": {"default": 0, "optional": 1, "type": "boolean"},
  "skiplock": {"optional": 1, "type": "boolean"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/status/shutdown POST": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.PowerMgmt"]]}, "proxyto": "node", "parameters": {
  "forceStop": {"default": 0, "optional": 1, "type": "boolean"},
  "node": {"format": "pve-node", "type": "string"},
  "timeout": {"default": 60, "minimum": 0, "optional": 1, "type": "integer"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/status/reboot POST": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.PowerMgmt"]]}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"},
  "timeout": {"minimum": 0, "optional": 1, "type": "integer"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/lxc/{vmid}/interfaces GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/vms/{vmid}", ["VM.Audit"]]}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "type": "integer"}
}},
"/nodes/{node}/tasks/{upid}/status GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"},
  "upid": {"type": "string"}
}},
"/nodes/{node}/tasks/{upid}/log GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": "node", "parameters": {
  "download": {"optional": 1, "type": "boolean"},
  "limit": {"default": 50, "minimum": 0, "optional": 1, "type": "integer"},
  "node": {"format": "pve-node", "type": "string"},
  "start": {"default": 0, "minimum": 0, "optional": 1, "type": "integer"},
  "upid": {"type": "string"}
}},
"/nodes/{node}/storage GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": "node", "parameters": {
  "content": {"format": "pve-storage-content-list", "optional": 1, "type": "string"},
  "enabled": {"default": 0, "optional": 1, "type": "boolean"},
  "format": {"default": 0, "optional": 1, "type": "boolean"},
  "node": {"format": "pve-node", "type": "string"},
  "storage": {"format": "pve-storage-id", "optional": 1, "type": "string"},
  "target": {"format": "pve-node", "optional": 1, "type": "string"}
}},
"/nodes/{node}/storage/{storage}/content GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/storage/{storage}", ["Datastore.Audit", "Datastore.AllocateSpace"], "any", 1]}, "proxyto": "node", "parameters": {
  "content": {"format": "pve-storage-content", "optional": 1, "type": "string"},
  "node": {"format": "pve-node", "type": "string"},
  "storage": {"format": "pve-storage-id", "type": "string"},
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "optional": 1, "type": "integer"}
}},
"/nodes/{node}/aplinfo GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"}
}},
"/nodes/{node}/aplinfo POST": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"check": ["perm", "/storage/{storage}", ["Datastore.AllocateTemplate"]]}, "proxyto": "node", "parameters": {
  "node": {"format": "pve-node", "type": "string"},
  "storage": {"format": "pve-storage-id", "type": "string"},
  "template": {"maxLength": 255, "type": "string"}
}},
"/cluster/nextid GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": null, "parameters": {
  "vmid": {"format": "pve-vmid", "maximum": 999999999, "minimum": 100, "optional": 1, "type": "integer"}
}},
"/cluster/resources GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": null, "parameters": {
  "type": {"enum": ["vm", "storage", "node", "sdn"], "optional": 1, "type": "string"}
}},
"/access/permissions GET": {"additionalProperties": 0, "allowtoken": 1, "permissions": {"user": "all"}, "proxyto": null, "parameters": {
  "path": {"optional": 1, "type": "string"},
  "userid": {"optional": 1, "pattern": "(?^:^(?^:[^\\s:/]+)\\@(?^:[A-Za-z][A-Za-z0-9\\.\\-_]+)(?:!(?^:[A-Za-z][A-Za-z0-9\\.\\-_]+))?$)", "type": "string"}
}}
}
"""

SCHEMA: dict[str, dict] = json.loads(_SCHEMA_JSON)
SERVED_ENDPOINTS: tuple[str, ...] = tuple(SCHEMA)
# In pve-api-lxc.json but not served (the double answers them 501): say so, not fake them.
NOT_SERVED_ENDPOINTS = (
    "/nodes/{node}/storage/{storage}/download-url POST",
    "/nodes/{node}/hardware/pci GET",
)
_DROPPED_KEYS = ("description", "typetext", "format_description", "verbose_description", "renderer")

# The dump collapses key0..keyN into 'key[n]'; the real key ranges (pve-api-lxc.json
# "indexed_keys"): net0..net31, mp0..mp255, unused0..unused255, dev0..dev255.
INDEXED_KEYS = {"net": 32, "mp": 256, "unused": 256, "dev": 256}

# POST /access/ticket is not in pve-api-lxc.json.  Minimal schema, not in the reference:
# the parameters of pve-access-control's create_ticket as remembered (proxmoxer sends
# username and password only).
_LOGIN_SCHEMA = {
    "additionalProperties": 0,
    "allowtoken": 0,
    "permissions": {"user": "world"},
    "proxyto": None,
    "parameters": {
        "username": {"type": "string", "maxLength": 64},
        "password": {"type": "string"},
        "realm": {"type": "string", "optional": 1},
        "otp": {"type": "string", "optional": 1},
        "tfa-challenge": {"type": "string", "optional": 1},
        "path": {"type": "string", "optional": 1, "maxLength": 64},
        "privs": {"type": "string", "optional": 1, "maxLength": 64},
        "new-format": {"type": "boolean", "optional": 1},
    },
}


def _strip(schema: Mapping[str, Any]) -> dict[str, Any]:
    """One property schema without its documentation keys (property *names* stay,
    e.g. the parameter called 'description')."""
    out = {k: v for k, v in schema.items() if k not in _DROPPED_KEYS}
    for sub in ("format", "properties"):
        if isinstance(out.get(sub), dict):
            out[sub] = {name: _strip(s) for name, s in out[sub].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = _strip(out["items"])
    return out


def extract_schema(raw: Mapping[str, Any]) -> dict[str, dict]:
    """The embedded extract, computed from the full pve-api-lxc.json document."""
    out = {}
    for key in SERVED_ENDPOINTS:
        entry = raw["endpoints"][key]
        out[key] = {
            "additionalProperties": entry["additionalProperties"],
            "allowtoken": entry["allowtoken"],
            "parameters": {name: _strip(schema) for name, schema in entry["parameters"].items()},
            "permissions": {k: v for k, v in entry["permissions"].items() if k != "description"},
            "proxyto": entry.get("proxyto"),
        }
    return out


# Privilege names the double knows (PVE 9); add_token/add_user refuse others so that a
# typo in a test fails loudly instead of silently granting nothing.
PRIVILEGES = frozenset(
    """
    VM.Allocate VM.Audit VM.Backup VM.Clone VM.Config.CDROM VM.Config.CPU VM.Config.Cloudinit
    VM.Config.Disk VM.Config.HWType VM.Config.Memory VM.Config.Network VM.Config.Options
    VM.Console VM.Migrate VM.PowerMgmt VM.Replicate VM.Snapshot VM.Snapshot.Rollback
    VM.GuestAgent.Audit VM.GuestAgent.FileRead VM.GuestAgent.FileWrite
    VM.GuestAgent.FileSystemMgmt VM.GuestAgent.Unrestricted
    Datastore.Allocate Datastore.AllocateSpace Datastore.AllocateTemplate Datastore.Audit
    Sys.AccessNetwork Sys.Audit Sys.Console Sys.Incoming Sys.Modify Sys.PowerMgmt Sys.Syslog
    SDN.Allocate SDN.Audit SDN.Use Pool.Allocate Pool.Audit Permissions.Modify
    Realm.Allocate Realm.AllocateUser User.Modify Group.Allocate
    Mapping.Audit Mapping.Modify Mapping.Use
    """.split()
)

# --------------------------------------------------------------------------------------
# Parameter validation (PVE::JSONSchema semantics, as summarised in proxmox-api.md)
# --------------------------------------------------------------------------------------


class _Ref:
    """A JSON array/object in a JSON body; check_type reports it by its Perl ref type."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return self.kind


class _FormatError(Exception):
    """A format validator's die(); the text ends with a newline like the Perl one."""


def _add_error(errors: dict, path: str, msg: str) -> None:
    errors.setdefault(path, msg)  # JSONSchema.pm add_error keeps the first error


def _is_integer(v: str) -> bool:
    return re.fullmatch(r"[+-]?\d+", v) is not None


def _is_number(v: str) -> bool:
    return re.fullmatch(r"[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?", v) is not None


def _num_text(x: Any) -> str:
    if isinstance(x, float) and x.is_integer():
        return str(int(x))
    return str(x)


def parse_boolean(v: str) -> str | None:
    """Booleans inside property strings: 1|on|yes|true and 0|off|no|false."""
    if re.fullmatch(r"(?i)1|on|yes|true", v):
        return "1"
    if re.fullmatch(r"(?i)0|off|no|false", v):
        return "0"
    return None


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list: NUL-separated if there is a NUL, else on [,;] and whitespace."""
    if "\0" in text:
        return text.split("\0")
    return [x for x in re.split(r"\s+", re.sub(r"[,;]", " ", text).strip()) if x]


_PERL_RE_CACHE: dict[str, re.Pattern] = {}


def _perl_match(pattern: str, value: str) -> bool:
    """m/^PATTERN$/ with '(?^:' read as '(?:'; Python's '$' matches like Perl's."""
    rx = _PERL_RE_CACHE.get(pattern)
    if rx is None:
        rx = _PERL_RE_CACHE[pattern] = re.compile("^" + pattern.replace("(?^:", "(?:") + "$")
    return rx.search(value) is not None


def _schema_lookup(props: Mapping[str, dict], key: str) -> dict | None:
    if key in props:
        return props[key]
    m = re.fullmatch(r"([a-z]+)(0|[1-9]\d*)", key)
    if m and f"{m[1]}[n]" in props and int(m[2]) < INDEXED_KEYS.get(m[1], 0):
        return props[f"{m[1]}[n]"]
    return None


def _check_type(path: str, typ: str | None, value: Any, errors: dict) -> bool:
    if not typ:
        return True
    if isinstance(value, _Ref):
        if typ == "array" and value.kind == "ARRAY" or typ == "object" and value.kind == "HASH":
            return True
        _add_error(errors, path, f"type check ('{typ}') failed - got {value.kind}")
        return False
    if typ in ("object", "array"):
        _add_error(errors, path, f"type check ('{typ}') failed")
        return False
    if typ == "boolean" and value not in ("0", "1"):
        _add_error(errors, path, f"type check ('boolean') failed - got '{value}'")
        return False
    if typ == "integer" and not _is_integer(value):
        _add_error(errors, path, f"type check ('integer') failed - got '{value}'")
        return False
    if typ == "number" and not _is_number(value):
        _add_error(errors, path, f"type check ('number') failed - got '{value}'")
        return False
    return True


def _check_prop(value: Any, schema: Mapping, path: str, errors: dict) -> None:
    if value is None:
        if not schema.get("optional"):
            _add_error(errors, path, "property is missing and it is not optional")
        return
    if not _check_type(path, schema.get("type"), value, errors):
        return
    if isinstance(value, _Ref):
        return
    fmt = schema.get("format")
    if fmt:
        try:
            check_format(fmt, value, path)
        except _FormatError as exc:
            _add_error(errors, path, f"invalid format - {exc}")
            return
    pattern = schema.get("pattern")
    if pattern and not _perl_match(pattern, value):
        _add_error(errors, path, "value does not match the regex pattern")
        return
    if schema.get("maxLength") is not None and len(value) > int(schema["maxLength"]):
        _add_error(errors, path, f"value may only be {schema['maxLength']} characters long")
        return
    if schema.get("minLength") is not None and len(value) < int(schema["minLength"]):
        _add_error(errors, path, f"value must be at least {schema['minLength']} characters long")
        return
    if _is_number(value):
        if schema.get("maximum") is not None and float(value) > float(schema["maximum"]):
            _add_error(errors, path, f"value must have a maximum value of {_num_text(schema['maximum'])}")
            return
        if schema.get("minimum") is not None and float(value) < float(schema["minimum"]):
            _add_error(errors, path, f"value must have a minimum value of {_num_text(schema['minimum'])}")
            return
    enum = schema.get("enum")
    if enum and value not in enum:
        _add_error(errors, path, f"value '{value}' does not have a value in the enumeration '{', '.join(enum)}'")


def check_object(path: str | None, props: Mapping[str, dict], value: Mapping[str, Any],
                 additional_properties: int | None, errors: dict) -> None:
    """JSONSchema.pm check_object: missing required keys, unknown keys, 'requires'."""
    for key, schema in props.items():
        if key.endswith("[n]"):
            continue  # indexed keys are all optional
        _check_prop(value.get(key), schema, f"{path}.{key}" if path else key, errors)
    for key in value:
        newpath = f"{path}.{key}" if path else key
        schema = _schema_lookup(props, key)
        if schema is not None:
            if key not in props:
                _check_prop(value[key], schema, newpath, errors)
            requires = schema.get("requires")
            # Message not in the reference: JSONSchema.pm check_object as read.
            if isinstance(requires, str) and value.get(requires) is None:
                _add_error(errors, f"{path}.{requires}" if path else requires,
                           f"missing property - '{newpath}' requires this property")
            continue
        if additional_properties is not None and not additional_properties:
            _add_error(errors, newpath,
                       "property is not defined in schema and the schema does not allow additional properties")


def validate(params: Mapping[str, Any], endpoint_schema: Mapping[str, Any]) -> dict[str, str]:
    """The per-parameter errors for one request ({} when it passes)."""
    errors: dict[str, str] = {}
    check_object(None, endpoint_schema["parameters"], params, endpoint_schema["additionalProperties"], errors)
    return errors


def parse_property_string(fmt: Mapping[str, dict], data: str, path: str | None = None) -> dict[str, str]:
    """JSONSchema.pm parse_property_string (errors raised as _FormatError)."""
    res: dict[str, str] = {}
    default_key = None
    for part in data.split(","):
        if re.fullmatch(r"\s*", part):
            continue
        m = re.fullmatch(r"([^=]+)=(.+)", part)
        if m:
            key, val = m.group(1), m.group(2)
            if key in res:
                raise _FormatError(f"duplicate key in comma-separated list property: {key}\n")
            schema = fmt.get(key)
            if schema is None:
                raise _FormatError(f"invalid key in comma-separated list property: {key}\n")
            if schema.get("type") == "boolean":
                val = parse_boolean(val) or val
            res[key] = val
        elif "=" not in part:
            if default_key:
                raise _FormatError(f"duplicate key in comma-separated list property: {default_key}\n")
            for key, schema in fmt.items():
                if schema.get("default_key"):
                    default_key = key
                    if not res.get(key):
                        res[key] = part
                        break
                    raise _FormatError(f"duplicate key in comma-separated list property: {key}\n")
            if not default_key:
                raise _FormatError("value without key, but schema does not define a default key\n")
        else:
            raise _FormatError("missing key in comma-separated list property\n")
    errors: dict[str, str] = {}
    check_object(path, fmt, res, 0, errors)
    if errors:
        # PVE::Exception stringified: its message, then one "key: error" line per error.
        raise _FormatError("format error\n" + "".join(f"{k}: {errors[k]}\n" for k in sorted(errors)))
    return res


def print_property_string(data: Mapping[str, str], fmt: Mapping[str, dict]) -> str:
    """JSONSchema.pm print_property_string: default key bare, required keys, the rest sorted."""
    default_key = next((k for k, s in fmt.items() if s.get("default_key")), None)
    out: list[str] = []
    done: set[str] = set()

    def add(key: str, bare: bool = False) -> None:
        if key in done or data.get(key) is None:
            return
        done.add(key)
        value = data[key]
        if fmt.get(key, {}).get("format") == "disk-size":
            value = format_size(parse_size(value))
        out.append(value if bare else f"{key}={value}")

    if default_key:
        add(default_key, bare=True)
    for key in sorted(data):
        if key in fmt and not fmt[key].get("optional"):
            add(key)
    for key in sorted(data):
        add(key)
    return ",".join(out)


def parse_size(text: str) -> int:
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT])?(?:iB)?", str(text))
    if not m:
        raise ValueError(text)
    mult = {None: 1, "K": KiB, "M": MiB, "G": GiB, "T": TiB}[m.group(2)]
    return int(float(m.group(1)) * mult)


def format_size(size: int) -> str:
    """PVE::JSONSchema::format_size: the largest unit that divides the size exactly."""
    units = ["", "K", "M", "G", "T"]
    i = 0
    while i < 4 and size and size % 1024 == 0:
        size //= 1024
        i += 1
    return f"{size}{units[i]}"


# Registered string formats used by the served endpoints; rules and messages from
# pve-api-lxc.json "string_formats" unless a comment says otherwise.
def _fmt_regex(rx: str, msg: str, flags: int = 0) -> Callable[[str], None]:
    compiled = re.compile(rx, flags)

    def check(v: str) -> None:
        if not compiled.fullmatch(v):
            raise _FormatError(msg.format(v=v) + "\n")

    return check


def _fmt_storage_id(v: str) -> None:
    if len(v) < 2:
        raise _FormatError(f"storage ID '{v}' cannot be shorter than 2 characters\n")
    if not re.fullmatch(r"(?i)[a-z][a-z0-9\-_.]*[a-z0-9]", v):
        raise _FormatError(f"storage ID '{v}' contains illegal characters\n")


def _ip_ok(v: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(v).version == version
    except ValueError:
        return False


def _cidr_ok(v: str, version: int) -> bool:
    addr, sep, prefix = v.partition("/")
    return bool(sep) and prefix.isdigit() and int(prefix) <= (32 if version == 4 else 128) and _ip_ok(addr, version)


def _fmt_ipv4_config(v: str) -> None:
    if v not in ("dhcp", "manual") and not _cidr_ok(v, 4):
        raise _FormatError("value does not look like a valid ipv4 network configuration\n")


def _fmt_ipv6_config(v: str) -> None:
    if v not in ("auto", "dhcp", "manual") and not _cidr_ok(v, 6):
        raise _FormatError("value does not look like a valid ipv6 network configuration\n")


def _fmt_ipv4(v: str) -> None:
    if not _ip_ok(v, 4):
        raise _FormatError("value does not look like a valid IPv4 address\n")


def _fmt_ipv6(v: str) -> None:
    if not _ip_ok(v, 6):
        raise _FormatError("value does not look like a valid IPv6 address\n")


def _fmt_ip_ll_iface(v: str) -> None:
    m = re.fullmatch(r"(fe80:[^%]+)%(.*)", v)
    if m and _ip_ok(m.group(1), 6) and re.fullmatch(r"[a-zA-Z][a-zA-Z0-9_.\-]{1,20}", m.group(2)):
        return
    if not (_ip_ok(v, 4) or _ip_ok(v, 6)):
        # Message not in the reference (its entry gives none): pve_verify_ip as remembered.
        raise _FormatError("value does not look like a valid IP address\n")


def _fmt_startup(v: str) -> None:
    for part in v.split(","):
        if not re.fullmatch(r"(?:order=)?\d+|up=\d+|down=\d+", part):
            raise _FormatError("unable to parse startup options\n")


_ZONES: set[str] | None = None


def _fmt_timezone(v: str) -> None:
    global _ZONES
    if v in ("host", "UTC"):
        return
    if _ZONES is None:
        try:  # the rule: a zone name from /usr/share/zoneinfo/zone.tab
            with open("/usr/share/zoneinfo/zone.tab", encoding="utf-8") as fh:
                _ZONES = {ln.split("\t")[2].strip() for ln in fh if ln.strip() and not ln.startswith("#")}
        except OSError:  # no zone.tab here: the zones Python knows instead
            import zoneinfo

            _ZONES = set(zoneinfo.available_timezones())
    if v not in _ZONES:
        raise _FormatError(f"invalid time zone '{v}'\n")


def _fmt_mp_string(v: str) -> None:
    if re.search(r"/\.\.?/", v) or re.search(r"/\.\.?$", v) or re.match(r"\.\.?/", v):
        raise _FormatError(f"{v} contains illegal character sequences\n")


def _fmt_dev_string(v: str) -> None:
    if not v.startswith("/dev/") or re.search(r"/\.\.?(?:/|$)", v):
        raise _FormatError(f"{v} is not a valid device path\n")


def _fmt_storage_content(v: str) -> None:
    if v not in ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "none", "import"):
        raise _FormatError(f"invalid content type '{v}'\n")


def _fmt_disk_size(v: str) -> None:
    if not re.fullmatch(r"(\d+(\.\d+)?)([KMGT](?:iB)?)?", v):
        raise _FormatError(f"value does not look like a valid disk size: {v}\n")


FORMATS: dict[str, Callable[[str], None]] = {
    "string": lambda v: None,
    "pve-node": _fmt_regex(r"[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?", "value does not look like a valid node name"),
    "pve-vmid": _fmt_regex(r"[1-9][0-9]{2,8}", "value does not look like a valid VM ID"),
    "pve-storage-id": _fmt_storage_id,
    "pve-configid": _fmt_regex(r"[a-z][a-z0-9_-]+", "invalid configuration ID '{v}'", re.I),
    "pve-volume-id": _fmt_regex(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", "unable to parse volume ID '{v}'", re.I | re.S),
    "pve-storage-content": _fmt_storage_content,
    # No message in the reference for pve-poolid: this one is the double's own.
    "pve-poolid": _fmt_regex(r"[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}", "invalid pool ID '{v}'"),
    "pve-tag": _fmt_regex(r"[a-z0-9_][a-z0-9_\-+.]*", "invalid characters in tag", re.I),
    "dns-name": _fmt_regex(r"(?:[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?\.)*[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?",
                           "value does not look like a valid DNS name"),
    "mac-addr": _fmt_regex(r"[a-f0-9][02468ace](?::[a-f0-9]{2}){5}",
                           "value does not look like a valid unicast MAC address", re.I),
    "pve-ipv4-config": _fmt_ipv4_config,
    "pve-ipv6-config": _fmt_ipv6_config,
    "ipv4": _fmt_ipv4,
    "ipv6": _fmt_ipv6,
    "lxc-ip-with-ll-iface": _fmt_ip_ll_iface,
    "disk-size": _fmt_disk_size,
    "pve-startup-order": _fmt_startup,
    "pve-ct-timezone": _fmt_timezone,
    "pve-lxc-mp-string": _fmt_mp_string,
    "pve-lxc-dev-string": _fmt_dev_string,
}


def check_format(fmt: Any, value: str, path: str | None = None) -> None:
    if isinstance(fmt, dict):
        parse_property_string(fmt, value, path)
        return
    name, kind = fmt, None
    if fmt.endswith("-list"):
        name, kind = fmt[: -len("-list")], "list"
    elif fmt.endswith("-opt"):
        name, kind = fmt[: -len("-opt")], "opt"
    validator = FORMATS[name]
    if kind == "list":
        for item in split_list(value):
            validator(item)
    elif kind == "opt":
        if value:
            validator(value)
    else:
        validator(value)


def _formats_used(schema: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        fmt = schema.get("format")
        if isinstance(fmt, str):
            found.add(re.sub(r"-(list|opt)$", "", fmt))
        for value in schema.values():
            found |= _formats_used(value)
    return found


MISSING_FORMATS = _formats_used(SCHEMA) - set(FORMATS)  # a test asserts this is empty

# --------------------------------------------------------------------------------------
# Errors a request can end with
# --------------------------------------------------------------------------------------


class _ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.errors = status, message, errors


ApiError = _ApiError  # what PVEDouble.call() raises: .status, .message, .errors


class _AuthFail(Exception):
    """401: empty body, delayed (auth_failure_delay; 3 s on a real server)."""


class _TaskFail(Exception):
    """A worker's die(): the task ends with 'TASK ERROR: <text>'."""


def _die(msg: str) -> _ApiError:
    return _ApiError(500, msg if msg.endswith("\n") else msg + "\n")


def _param_exc(errors: dict) -> _ApiError:
    return _ApiError(400, "Parameter verification failed.\n", errors)


def _perm_exc(what: str | None = None) -> _ApiError:
    msg = "Permission check failed"
    if what:
        msg += f" ({what})"
    return _ApiError(403, msg + "\n")


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


class Request(NamedTuple):
    method: str
    path: str  # below /api2/json, e.g. "/nodes/pve/lxc"
    params: dict  # query + body, with secrets (passwords) replaced by "<redacted>"


@dataclass
class Token:
    tokenid: str  # "user@realm!name"
    secret: str = field(repr=False)
    privsep: bool
    acl: dict[str, frozenset[str]]

    @property
    def userid(self) -> str:
        return self.tokenid.split("!", 1)[0]

    @property
    def name(self) -> str:
        return self.tokenid.split("!", 1)[1]


@dataclass
class User:
    userid: str
    password: str | None = field(default=None, repr=False)
    acl: dict[str, frozenset[str]] = field(default_factory=dict)


@dataclass
class Container:
    vmid: int
    node: str
    config: dict[str, Any]  # as PVE stores it, typed like GET config returns it (no digest)
    status: str = "stopped"
    foreign: bool = False  # pre-existing, not created through the API
    started_at: float | None = None
    # file-backed mode only: the file's [pve:pending] and snapshot sections, kept as read
    pending: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Volume:
    volid: str
    content: str
    format: str
    size: int
    vmid: int | None = None
    ctime: int = field(default_factory=lambda: int(time.time()))


@dataclass
class Storage:
    storage: str
    type: str  # dir | lvmthin | zfspool
    content: tuple[str, ...]
    total: int
    avail: int
    path: str | None = None  # dir storages: where vztmpl/ lives on the host
    volumes: dict[str, Volume] = field(default_factory=dict)


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    authid: str
    ends_at: float
    lines: list[str] = field(default_factory=list)
    exitstatus: str | None = None
    work: Callable[[], None] | None = field(default=None, repr=False)
    on_fail: Callable[[], None] | None = field(default=None, repr=False)
    injected: str | None = None

    @property
    def status(self) -> str:
        return "running" if self.exitstatus is None else "stopped"


@dataclass(frozen=True)
class _Auth:
    userid: str
    tokenid: str | None = None

    @property
    def authid(self) -> str:
        return f"{self.userid}!{self.tokenid}" if self.tokenid else self.userid


TASK_TYPES = ("vzcreate", "vzstart", "vzstop", "vzshutdown", "vzreboot", "vzdestroy", "download")
_SECRET_PARAMS = ("password", "new-password", "otp", "tfa-challenge")
_OSTYPES = tuple(SCHEMA["/nodes/{node}/lxc POST"]["parameters"]["ostype"]["enum"])
_CONFIG_PROPS = SCHEMA["/nodes/{node}/lxc/{vmid}/config PUT"]["parameters"]
_CREATE_PROPS = SCHEMA["/nodes/{node}/lxc POST"]["parameters"]
_NEW_DISK_RE = re.compile(r"(?:([^\s:]+):)?(\d+(\.\d+)?)")  # pve-container $NEW_DISK_RE


def _acl_privs(acl: Mapping[str, frozenset[str]], path: str) -> frozenset[str]:
    """The deepest ACL entry on the path or one of its parents wins (PVE's roles())."""
    parts = [p for p in path.split("/") if p]
    for i in range(len(parts), -1, -1):
        p = "/" + "/".join(parts[:i])
        if p in acl:
            return acl[p]
    return frozenset()


def _norm_acl(acl: Mapping[str, Iterable[str]] | None) -> dict[str, frozenset[str]]:
    out = {}
    for path, privs in (acl or {}).items():
        privs = frozenset([privs] if isinstance(privs, str) else privs)
        unknown = privs - PRIVILEGES
        if unknown:
            raise ValueError(f"unknown privilege(s) {sorted(unknown)} on {path}")
        norm = "/" + "/".join(p for p in path.split("/") if p)
        out[norm] = privs
    return out


# --------------------------------------------------------------------------------------
# The double
# --------------------------------------------------------------------------------------

_ROUTES: list[tuple[str, str, str]] = [
    ("GET", "/version", "_h_version"),
    ("GET", "/nodes", "_h_nodes"),
    ("GET", "/nodes/{node}/status", "_h_node_status"),
    ("GET", "/nodes/{node}/lxc", "_h_lxc_index"),
    ("POST", "/nodes/{node}/lxc", "_h_lxc_create"),
    ("DELETE", "/nodes/{node}/lxc/{vmid}", "_h_lxc_destroy"),
    ("GET", "/nodes/{node}/lxc/{vmid}/config", "_h_config_get"),
    ("PUT", "/nodes/{node}/lxc/{vmid}/config", "_h_config_put"),
    ("GET", "/nodes/{node}/lxc/{vmid}/status/current", "_h_status_current"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/start", "_h_start"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/stop", "_h_stop"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/shutdown", "_h_shutdown"),
    ("POST", "/nodes/{node}/lxc/{vmid}/status/reboot", "_h_reboot"),
    ("GET", "/nodes/{node}/lxc/{vmid}/interfaces", "_h_interfaces"),
    ("GET", "/nodes/{node}/tasks/{upid}/status", "_h_task_status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log", "_h_task_log"),
    ("GET", "/nodes/{node}/storage", "_h_storage_index"),
    ("GET", "/nodes/{node}/storage/{storage}/content", "_h_storage_content"),
    ("GET", "/nodes/{node}/aplinfo", "_h_aplinfo"),
    ("POST", "/nodes/{node}/aplinfo", "_h_apl_download"),
    ("GET", "/cluster/nextid", "_h_nextid"),
    ("GET", "/cluster/resources", "_h_resources"),
    ("GET", "/access/permissions", "_h_permissions"),
]
assert sorted(f"{t} {m}" for m, t, _ in _ROUTES) == sorted(SERVED_ENDPOINTS)


class _Result(NamedTuple):
    data: Any
    total: int | None = None


DEFAULT_TEMPLATE = "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


class PVEDouble:
    """The test double.  Use as a context manager (starts and stops the server)."""

    def __init__(
        self,
        nodes: Iterable[str] = ("pve",),
        *,
        task_seconds: float = 0.2,
        auth_failure_delay: float = 3.0,
        seed: int | None = None,
        config_dir: str | os.PathLike | None = None,
    ):
        self.nodes: list[str] = list(nodes)
        # File-backed mode (see the module docstring): the pmxcfs directory (/etc/pve).
        self.config_dir: Path | None = Path(config_dir) if config_dir is not None else None
        self._disk: dict[int, tuple[str, str]] = {}  # vmid -> (node, file text) as last read or written
        self._rendered: dict[int, str] = {}  # vmid -> write(memory) when memory last equalled the file
        self._disk_status: dict[int, str] = {}  # vmid -> run state as last read or written
        self.config_warnings: list[str] = []  # what PVE would warn() while reading the files
        self.task_seconds = task_seconds
        # A real server delays every 401 by about 3 s; tests set this near 0.
        self.auth_failure_delay = auth_failure_delay
        self.version = {"release": "9.1", "repoid": "1d2a5c9e3b7f4a60", "version": "9.1.3"}  # representative
        self.node_cpus = 16
        self.node_memory = 64 * GiB
        self._rng = random.Random(seed)
        self._lock = threading.RLock()
        self._users: dict[str, User] = {"root@pam": User("root@pam")}
        self._tokens: dict[str, Token] = {}
        self._tickets: dict[str, tuple[str, str]] = {}  # ticket -> (userid, csrf token)
        self._cts: dict[int, Container] = {}
        self._qemu: dict[int, str] = {}  # vmid -> node, only to make vmids collide
        self._tasks: dict[str, Task] = {}
        self._failures: list[tuple[str, str, int | str | None, list[str]]] = []
        self._requests: list[Request] = []
        self._pstart = self._rng.randrange(0x100000, 0x800000)
        self.internal_errors: list[str] = []  # tracebacks of the double's own bugs
        self.dhcp_addresses: dict[int, str] = {}  # vmid -> "a.b.c.d/nn" handed out for ip=dhcp
        self.storages: dict[str, Storage] = {}
        self.add_storage("local", "dir", ("backup", "iso", "vztmpl"), total=100 * GiB, avail=80 * GiB,
                         path="/var/lib/vz")
        self.add_storage("local-lvm", "lvmthin", ("images", "rootdir"), total=400 * GiB, avail=350 * GiB)
        self.add_template(DEFAULT_TEMPLATE, size=123 * MiB)
        # What POST aplinfo can download (GET aplinfo lists it); representative names.
        self.appliances: list[dict[str, Any]] = [
            {"template": "debian-12-standard_12.7-1_amd64.tar.zst", "package": "debian-12-standard",
             "os": "debian-12", "version": "12.7-1", "type": "lxc", "section": "system",
             "headline": "Debian 12 Bookworm (standard)", "size": 123 * MiB},
            {"template": "ubuntu-24.04-standard_24.04-2_amd64.tar.zst", "package": "ubuntu-24.04-standard",
             "os": "ubuntu-24.04", "version": "24.04-2", "type": "lxc", "section": "system",
             "headline": "Ubuntu 24.04 Noble (standard)", "size": 141 * MiB},
        ]
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None
        self._tmpdir: str | None = None
        self.ca_path: str = ""
        self.host = "127.0.0.1"
        self.port = 0
        self.ssl_fingerprint = ""
        if self.config_dir is not None:
            for node in self.nodes:
                (self.config_dir / "nodes" / node / "lxc").mkdir(parents=True, exist_ok=True)
            (self.config_dir / pve_conf.STANDIN_DIR).mkdir(parents=True, exist_ok=True)
            with self._lock:
                self._sync_in()

    # ---- life cycle ------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    def start(self) -> "PVEDouble":
        if self._httpd is not None:
            return self
        self._tmpdir = tempfile.mkdtemp(prefix="pve_double-")
        self.ca_path, cert, key = make_certificates(self._tmpdir)
        with open(cert, encoding="ascii") as fh:
            der = ssl.PEM_cert_to_DER_cert(fh.read())
        digest = hashlib.sha256(der).hexdigest().upper()
        self.ssl_fingerprint = ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self._httpd = _Server((self.host, 0), ctx, self)
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"pve_double:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._tmpdir:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def __enter__(self) -> "PVEDouble":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- seeding and inspection (the Python API for tests) ---------------------------

    def add_token(self, tokenid: str, secret: str, privsep: bool = True,
                  acl: Mapping[str, Iterable[str]] | None = None) -> Token:
        """An API token 'user@realm!name'.  acl maps ACL paths to privileges.

        privsep=True: the token has the intersection of its ACL and its user's
        privileges; privsep=False: its user's.  root@pam has every privilege.  A user
        not added before is created with the token's ACL (so the token's acl is what
        it can do).  A token is never root@pam, whatever its privileges."""
        if not re.fullmatch(r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+![A-Za-z][A-Za-z0-9.\-_]+", tokenid):
            raise ValueError(f"not a token id (user@realm!name): {tokenid!r}")
        norm = _norm_acl(acl)
        with self._lock:
            token = Token(tokenid, secret, bool(privsep), norm)
            if token.userid not in self._users:
                self._users[token.userid] = User(token.userid, acl=dict(norm))
            self._tokens[tokenid] = token
            return token

    def add_user(self, userid: str, password: str | None = None,
                 acl: Mapping[str, Iterable[str]] | None = None) -> User:
        if not re.fullmatch(r"[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+", userid):
            raise ValueError(f"not a user id (user@realm): {userid!r}")
        with self._lock:
            user = self._users.setdefault(userid, User(userid))
            if password is not None:
                user.password = password
            if acl is not None:
                user.acl = _norm_acl(acl)
            return user

    def set_root_password(self, password: str) -> None:
        with self._lock:
            self._users["root@pam"].password = password

    def add_storage(self, storage: str, type: str = "dir", content: Iterable[str] = ("vztmpl",), *,
                    total: int = 100 * GiB, avail: int | None = None, path: str | None = None) -> Storage:
        with self._lock:
            st = Storage(storage, type, tuple(content), total, total if avail is None else avail, path)
            self.storages[storage] = st
            return st

    def add_template(self, volid: str, size: int = 100 * MiB) -> Volume:
        """A vztmpl volume, e.g. 'local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst'."""
        sid, _, volname = volid.partition(":")
        fname = volname.split("/", 1)[-1]
        fmt = next((f for ext, f in ((".tar.zst", "tzst"), (".tar.gz", "tgz"), (".tar.xz", "txz"),
                                     (".tar.bz2", "tbz2"), (".tar", "tar")) if fname.endswith(ext)), "raw")
        with self._lock:
            vol = Volume(volid, "vztmpl", fmt, size)
            self.storages[sid].volumes[volid] = vol
            return vol

    def add_container(self, vmid: int, config: Mapping[str, Any] | None = None, *, node: str = "pve",
                      status: str = "stopped", foreign: bool = True) -> Container:
        """A container that exists before the test (foreign: not made through the API).

        config is stored as PVE stores it (values may be given as str or int; raw
        lxc.* lines go under "lxc" as [[key, value], ...])."""
        conf = {k: (copy.deepcopy(v) if k == "lxc" else _typed(k, v)) for k, v in (config or {}).items()}
        with self._lock:
            self._sync_in()
            ct = Container(int(vmid), node, conf, status, foreign,
                           time.time() if status == "running" else None)
            self._cts[ct.vmid] = ct
            self._sync_out()
            return ct

    def add_vm(self, vmid: int, node: str = "pve") -> None:
        """A QEMU guest, only so that its vmid is taken."""
        with self._lock:
            self._qemu[int(vmid)] = node

    def fail_next(self, task_type: str, message: str, *, vmid: int | str | None = None,
                  log: Iterable[str] = ()) -> None:
        """The next task of this type (for this vmid / template id, if given) ends with
        'TASK ERROR: <message>'; exitstatus is the message verbatim.  log: lines
        printed before the error.  Nothing the task would change is changed."""
        if task_type not in TASK_TYPES:
            raise ValueError(f"unknown task type {task_type!r}; known: {TASK_TYPES}")
        with self._lock:
            self._failures.append((task_type, message, vmid, list(log)))

    @property
    def containers(self) -> dict[int, Container]:
        with self._lock:
            self._refresh()
            self._sync_out()
            return dict(self._cts)

    @property
    def tasks(self) -> list[Task]:
        with self._lock:
            self._refresh()
            self._sync_out()
            return list(self._tasks.values())

    def call(self, method: str, path: str, params: Mapping[str, Any] | None = None, *,
             authid: str = "root@pam") -> Any:
        """One API call in-process, without HTTP, as authid (a user, as with a ticket,
        or an added token 'user@realm!name'): what a CLI on the node does (pct is a
        CLI over the same API methods, run as root@pam).  path is below /api2/json,
        e.g. '/nodes/pve/lxc/100/config'.
        Returns the data; raises ApiError (.status, .message, .errors).  Tasks that
        are due (task_seconds=0: at once) finish before it returns."""
        values = {k: ("1" if v else "0") if isinstance(v, bool) else _num_text(v)
                  for k, v in (params or {}).items() if v is not None}
        auth = _Auth(*authid.split("!", 1))  # "user@realm" or a token "user@realm!name"
        with self._lock:
            self._refresh()
            try:
                result = self._call(auth, method.upper(), path, unquote(path.rstrip("/") or "/"), values)
                self._reap()
            finally:
                self._sync_out()
        return result.data if isinstance(result, _Result) else result

    # ---- file-backed mode (pmxcfs model) ---------------------------------------------

    def _refresh(self) -> None:
        """Before anything reads or changes state: the files first, then due tasks
        (whose changes _sync_out writes)."""
        self._sync_in()
        self._reap()

    def _config_files(self) -> dict[int, tuple[str, Path]]:
        found: dict[int, tuple[str, Path]] = {}
        for lxc_dir in sorted((self.config_dir / "nodes").glob("*/lxc")):
            for path in sorted(lxc_dir.glob("*.conf")):
                if re.fullmatch(r"\d+\.conf", path.name):
                    found.setdefault(int(path.stem), (lxc_dir.parent.name, path))
        return found

    def _parse_file(self, vmid: int, raw: str) -> pve_conf.PctConfig:
        parsed = pve_conf.parse_pct_config(raw, vmid, _check_type_from_file)
        self.config_warnings.extend(parsed.warnings)
        return parsed

    def _sync_in(self) -> None:
        """Memory := the files (an unchanged file is not parsed again).  Container
        objects are updated in place: pending tasks hold them."""
        if self.config_dir is None:
            return
        files = self._config_files()
        for vmid in [v for v in self._cts if v not in files and v in self._disk]:
            del self._cts[vmid]  # removed on the node
            self._disk.pop(vmid, None)
            self._rendered.pop(vmid, None)
            self._disk_status.pop(vmid, None)
        for vmid, (node, path) in files.items():
            try:
                raw = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                continue
            ct = self._cts.get(vmid)
            if ct is None or self._disk.get(vmid) != (node, raw):
                parsed = self._parse_file(vmid, raw)
                if ct is None:
                    ct = self._cts[vmid] = Container(vmid, node, parsed.main, foreign=True)
                else:
                    ct.node, ct.config = node, parsed.main
                ct.pending, ct.snapshots = parsed.pending, parsed.snapshots
                self._disk[vmid] = (node, raw)
                self._rendered[vmid] = self._render(ct)
            state = pve_conf.read_status(self.config_dir, vmid) or "stopped"  # no file: never started
            if state in ("running", "stopped") and state != ct.status:
                ct.status = state
                ct.started_at = time.time() if state == "running" else None
            self._disk_status[vmid] = state

    def _sync_out(self) -> None:
        """The files := memory, where they differ; memory then holds the file as PVE
        reads it back (parse(write(conf)))."""
        if self.config_dir is None:
            return
        for vmid, ct in self._cts.items():
            raw = self._render(ct)
            old = self._disk.get(vmid)
            # Unchanged since read (a file written by hand is not rewritten by reading it)
            if old is None or old[0] != ct.node or self._rendered.get(vmid) != raw:
                if old is not None and old[0] != ct.node:
                    pve_conf.config_path(self.config_dir, old[0], vmid).unlink(missing_ok=True)
                pve_conf.write_file(pve_conf.config_path(self.config_dir, ct.node, vmid), raw)
                self._disk[vmid] = (ct.node, raw)
                parsed = self._parse_file(vmid, raw)
                ct.config, ct.pending, ct.snapshots = parsed.main, parsed.pending, parsed.snapshots
                self._rendered[vmid] = self._render(ct)
            if self._disk_status.get(vmid) != ct.status:
                pve_conf.write_file(pve_conf.status_path(self.config_dir, vmid), ct.status + "\n")
                self._disk_status[vmid] = ct.status
        for vmid in [v for v in self._disk if v not in self._cts]:
            node, _ = self._disk.pop(vmid)
            self._rendered.pop(vmid, None)
            pve_conf.config_path(self.config_dir, node, vmid).unlink(missing_ok=True)
            pve_conf.status_path(self.config_dir, vmid).unlink(missing_ok=True)
            self._disk_status.pop(vmid, None)

    @staticmethod
    def _render(ct: Container) -> str:
        return pve_conf.write_pct_config(ct.config, ct.pending, ct.snapshots)

    def _ct_digest(self, ct: Container) -> str:
        """GET config's digest: in file-backed mode the SHA-1 of the file (PVE's
        parse_pct_config), else a hash of the stored config."""
        disk = self._disk.get(ct.vmid)
        if self.config_dir is not None and disk is not None:
            return hashlib.sha1(disk[1].encode("utf-8")).hexdigest()
        return _digest(ct.config)

    def _check_writable(self, conf: Mapping[str, Any]) -> None:
        """write_pct_config dies on a value with a newline (file-backed mode only: the
        in-memory double never writes a file)."""
        if self.config_dir is None:
            return
        for key, value in conf.items():
            if key not in ("description", "lxc") and "\n" in _num_text(value):
                raise _die(f"detected invalid newline inside property '{key}'")

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    # ---- HTTP entry ------------------------------------------------------------------

    def _serve(self, h: "_Handler", method: str) -> None:
        url = urlsplit(h.path)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length > 0 else b""
        try:
            status, reason, ctype, payload = self._process(h.headers, method, url, body)
        except _AuthFail as exc:
            if self.auth_failure_delay > 0:
                time.sleep(self.auth_failure_delay)
            status, reason, ctype, payload = 401, str(exc), None, b""
        except Exception:  # the double's own bug: 500 with its traceback kept for the test
            tb = traceback.format_exc()
            self.internal_errors.append(tb)
            status, reason, ctype = 500, "pve_double internal error", "application/json;charset=UTF-8"
            payload = json.dumps({"data": None, "message": "pve_double internal error\n"}).encode()
        reason = (reason.split("\n", 1)[0] or "Error").encode("latin-1", "replace").decode("latin-1")
        h.send_response(status, reason)
        if ctype:
            h.send_header("Content-Type", ctype)
        h.send_header("Content-Length", str(len(payload)))
        h.send_header("Cache-Control", "max-age=0")
        h.end_headers()
        h.wfile.write(payload)

    def _process(self, headers, method: str, url, body: bytes) -> tuple[int, str, str | None, bytes]:
        if body and method in ("GET", "DELETE"):
            msg = f"Unexpected content for method '{method}'"
            return 501, msg, "text/plain;charset=UTF-8", msg.encode()
        raw_path = url.path
        rel_raw = raw_path[len(API_PREFIX):] if raw_path.startswith(API_PREFIX + "/") else None
        rel = unquote(rel_raw.rstrip("/") or "/") if rel_raw is not None else unquote(raw_path)
        try:
            params = self._parse_params(headers, url.query, body)
        except _ApiError as exc:
            return exc.status, exc.message, "application/json;charset=UTF-8", json.dumps(
                {"data": None, "message": exc.message}).encode()
        with self._lock:
            self._refresh()
            self._requests.append(Request(method, rel, {k: ("<redacted>" if k in _SECRET_PARAMS else v)
                                                        for k, v in params.items()}))
            try:
                if rel_raw is None:  # only /api2/json is served
                    raise self._not_implemented(method, rel)
                if rel == "/access/ticket" and method == "POST":
                    return self._ok(self._login(params))
                auth = self._authenticate(headers, method)
                return self._ok(self._call(auth, method, rel_raw, rel, params))
            except _ApiError as exc:
                doc: dict[str, Any] = {"data": None}
                if exc.errors:
                    doc["errors"] = exc.errors
                doc["message"] = exc.message
                return exc.status, exc.message, "application/json;charset=UTF-8", json.dumps(doc).encode()
            finally:
                self._sync_out()

    @staticmethod
    def _ok(result: Any) -> tuple[int, str, str, bytes]:
        doc = {"data": result.data, "total": result.total} if isinstance(result, _Result) else {"data": result}
        return 200, "OK", "application/json;charset=UTF-8", json.dumps(doc).encode()

    @staticmethod
    def _not_implemented(method: str, rel: str) -> _ApiError:
        return _ApiError(501, f"Method '{method} {rel}' not implemented")

    @staticmethod
    def _parse_params(headers, query: str, body: bytes) -> dict[str, Any]:
        """Query string and body (form or JSON); query parameters win.  Repeated keys
        are joined with NUL (what the -list formats split on)."""

        def form(text: str) -> dict[str, str]:
            out: dict[str, str] = {}
            for k, v in parse_qsl(text, keep_blank_values=True):
                out[k] = f"{out[k]}\0{v}" if k in out else v
            return out

        body_params: dict[str, Any] = {}
        if body:
            ctype = (headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype == "application/json":
                try:
                    doc = json.loads(body)
                except ValueError:
                    doc = None
                if not isinstance(doc, dict):  # not in the reference: the double's own answer
                    raise _ApiError(400, "invalid JSON body\n")
                for k, v in doc.items():
                    if v is None:  # JSON null: treated as not given (simplest)
                        continue
                    if isinstance(v, bool):  # JSON true/false pass for booleans
                        body_params[k] = "1" if v else "0"
                    elif isinstance(v, (int, float)):
                        body_params[k] = _num_text(v)
                    elif isinstance(v, list):
                        body_params[k] = _Ref("ARRAY")
                    elif isinstance(v, dict):
                        body_params[k] = _Ref("HASH")
                    else:
                        body_params[k] = str(v)
            else:
                body_params = form(body.decode("utf-8", "replace"))
        return {**body_params, **form(query)}

    def _authenticate(self, headers, method: str) -> _Auth:
        authz = headers.get("Authorization") or ""
        m = re.search(r"(?:^|\s)PVEAPIToken(?:=| )([^;]*)", authz)
        if m:
            tokenid, sep, secret = m.group(1).rpartition("=")
            token = self._tokens.get(tokenid)
            if not sep or token is None or not hmac.compare_digest(token.secret.encode(), secret.encode()):
                raise _AuthFail("Authentication failed!")
            return _Auth(token.userid, token.name)
        ticket = None
        for part in (headers.get("Cookie") or "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == "PVEAuthCookie":
                ticket = unquote(value)
        if ticket is None:
            raise _AuthFail("No ticket")
        session = self._tickets.get(ticket)
        if session is None:
            raise _AuthFail("Authentication failed!")
        userid, csrf = session
        # Tickets need the CSRF header on every non-GET request; tokens do not.  The
        # text is not in the reference (pve-manager HTTPServer.pm auth_handler as read).
        if method != "GET" and not hmac.compare_digest(
                (headers.get("CSRFPreventionToken") or "").encode(), csrf.encode()):
            raise _AuthFail("Permission denied - invalid csrf token")
        return _Auth(userid)

    def _login(self, params: dict[str, Any]) -> dict[str, Any]:
        errors = validate(params, _LOGIN_SCHEMA)
        if errors:
            raise _param_exc(errors)
        username = params["username"]
        if "@" not in username and params.get("realm"):
            username = f"{username}@{params['realm']}"
        user = self._users.get(username)
        if user is None or user.password is None or not hmac.compare_digest(
                user.password.encode(), params["password"].encode()):
            # create_ticket answers 401 "authentication failure"; delayed like every 401.
            raise _AuthFail("authentication failure")
        now = int(time.time())
        ticket = f"PVE:{username}:{now:08X}::{self._rng.getrandbits(256):064x}"
        csrf = f"{now:08X}:{self._rng.getrandbits(160):040x}"
        self._tickets[ticket] = (username, csrf)
        # The real answer also carries 'cap' (the user's capabilities): not modelled.
        return {"username": username, "ticket": ticket, "CSRFPreventionToken": csrf}

    def _route(self, method: str, rel_raw: str, rel: str) -> tuple[str, dict[str, str], str]:
        segs = [s for s in rel_raw.split("/") if s]
        for m, template, handler in _ROUTES:
            tsegs = [s for s in template.split("/") if s]
            if len(tsegs) != len(segs):
                continue
            uri: dict[str, str] = {}
            for t, s in zip(tsegs, segs):
                if t.startswith("{"):
                    uri[t[1:-1]] = unquote(s)
                elif t != unquote(s):
                    break
            else:
                if m == method:
                    return f"{template} {method}", uri, handler
        # an unknown path and a known path with an unknown method answer the same 501
        raise self._not_implemented(method, rel)

    def _call(self, auth: _Auth, method: str, rel_raw: str, rel: str, params: dict[str, Any]) -> Any:
        # 1. route (501)
        key, uri, handler = self._route(method, rel_raw, rel)
        schema = SCHEMA[key]
        # A body/query parameter that repeats a URI parameter with another value: 400
        # (pve-manager HTTPServer.pm, checked right after the route lookup).
        merged: dict[str, Any] = dict(uri)
        for k, v in params.items():
            if k in uri and v != uri[k]:
                raise _param_exc({k: "duplicate parameter (already defined in URI) with conflicting values!"})
            merged[k] = v
        # 2. token allowed (403)
        if auth.tokenid and not schema["allowtoken"]:
            raise _perm_exc(f"URI '{rel}' not available with API token, need proper ticket.")
        # 3. permission (403), from the schema's 'permissions'
        if "check" in schema["permissions"]:
            self._eval_check(auth, schema["permissions"]["check"], merged)
        # proxyto: an unknown node cannot be proxied to (500; the text after the dash is
        # representative).
        if schema.get("proxyto") == "node":
            node = merged.get("node")
            if isinstance(node, str) and node not in self.nodes:
                raise _die(f"hostname lookup '{node}' failed - failed to get address info for: {node}: "
                           "Name or service not known")
        # 4. parameter validation (400)
        errors = validate(merged, schema)
        if errors:
            raise _param_exc(errors)
        # 5. handler (its die() is a 500)
        return getattr(self, handler)(auth, merged)

    # ---- permissions -----------------------------------------------------------------

    def privileges(self, auth: _Auth, path: str) -> frozenset[str]:
        user = self._users.get(auth.userid)
        if auth.userid == "root@pam":
            have = PRIVILEGES
        else:
            have = _acl_privs(user.acl, path) if user else frozenset()
        if auth.tokenid:
            token = self._tokens[auth.authid]
            if token.privsep:
                have = have & _acl_privs(token.acl, path)
        return have

    def _check(self, auth: _Auth, path: str, privs: Iterable[str], noerr: bool = False) -> bool:
        have = self.privileges(auth, path)
        for priv in privs:
            if priv not in have:
                if noerr:
                    return False
                raise _perm_exc(f"{path}, {priv}")
        return True

    def _check_any(self, auth: _Auth, path: str, privs: list[str], noerr: bool = False) -> bool:
        if set(privs) & self.privileges(auth, path):
            return True
        if noerr:
            return False
        raise _perm_exc(f"{path}, {'|'.join(privs)}")

    def _eval_check(self, auth: _Auth, check: list, params: Mapping[str, Any]) -> bool:
        op = check[0]
        if op == "perm":
            path = re.sub(r"\{([^}]+)\}", lambda m: str(params.get(m.group(1), "")), check[1])
            opts = dict(zip(check[3::2], check[4::2]))
            if opts.get("any"):
                return self._check_any(auth, path, list(check[2]))
            return self._check(auth, path, check[2])
        if op == "and":
            return all(self._eval_check(auth, sub, params) for sub in check[1:])
        if op == "or":
            for sub in check[1:-1]:
                try:
                    return self._eval_check(auth, sub, params)
                except _ApiError:
                    continue
            return self._eval_check(auth, check[-1], params)
        raise NotImplementedError(f"permission check {op!r}")

    def _check_vnet_access(self, auth: _Auth, net: Mapping[str, str]) -> None:
        """SDN.Use on /sdn/zones/localnetwork/<bridge>[/<tag>] (pve-guest-common)."""
        if auth.authid == "root@pam" or not net.get("bridge"):
            return
        base = f"/sdn/zones/localnetwork/{net['bridge']}"
        if net.get("tag"):
            self._check(auth, f"{base}/{net['tag']}", ["SDN.Use"])
        for tag in (net.get("trunks") or "").split(";"):
            if tag:
                self._check(auth, f"{base}/{tag}", ["SDN.Use"])
        if not net.get("tag") and not net.get("trunks"):
            self._check(auth, base, ["SDN.Use"])

    def _check_volume_access(self, auth: _Auth, vmid: int, volid: str, content: str) -> None:
        """pve-storage check_volume_access as the reference summarises it."""
        if auth.authid == "root@pam":
            return
        m = re.fullmatch(r"([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)", volid, re.I | re.S)
        if not m:
            raise _die("Only root can pass arbitrary filesystem paths.")
        sid, volname = m.groups()
        if sid not in self.storages:
            raise _die(f"storage '{sid}' does not exist")
        vtype, owner = self._volume_type(volname)
        if vtype != content and not (content == "rootdir" and vtype == "images"):
            raise _die(f"unable to use volume {volid} - content type needs to be '{content}'")
        if self._check(auth, f"/storage/{sid}", ["Datastore.Allocate"], noerr=True):
            return
        if vtype in ("iso", "vztmpl", "import"):
            self._check_any(auth, f"/storage/{sid}", ["Datastore.AllocateSpace", "Datastore.Audit"])
        elif owner is not None and owner == vmid:
            return
        else:
            raise _die(f"missing privileges to access {volid}")

    @staticmethod
    def _volume_type(volname: str) -> tuple[str, int | None]:
        # Simplified parse_volname: the first path element names the content type,
        # anything else is a guest volume ("images"); the owner is the vmid in its name.
        head = volname.split("/", 1)[0]
        if "/" in volname and head in ("vztmpl", "iso", "backup", "snippets", "import"):
            return head, None
        m = re.search(r"(?:vm|subvol|base)-(\d+)-disk-\d+", volname)
        return "images", int(m.group(1)) if m else None

    def _check_ct_modify_config_perm(self, auth: _Auth, vmid: int, oldconf: Mapping[str, Any] | None,
                                     newconf: Mapping[str, Any], delete: list[str], unprivileged: bool,
                                     default_storage: str) -> None:
        """pve-container LXC.pm check_ct_modify_config_perm (keys in sorted order: Perl's
        hash order is random).  Nothing is checked for root@pam with a ticket."""
        if auth.authid == "root@pam":
            return
        vm = f"/vms/{vmid}"

        def check(opt: str, deleting: bool) -> None:
            if opt in ("cores", "cpuunits", "cpulimit"):
                self._check(auth, vm, ["VM.Config.CPU"])
            elif opt == "rootfs" or re.fullmatch(r"mp\d+", opt):
                self._check(auth, vm, ["VM.Config.Disk"])
                if deleting:
                    return
                volume = _parse_loose(_prop_format(opt), str(newconf[opt])).get("volume", "")
                if volume.startswith("/"):
                    kind = "device" if volume.startswith("/dev/") else "bind"
                    raise _perm_exc(f"mount point type {kind} is only allowed for root@pam")
                m = _NEW_DISK_RE.fullmatch(volume)
                if m:
                    self._check(auth, f"/storage/{m.group(1) or default_storage}", ["Datastore.AllocateSpace"])
                else:
                    self._check_volume_access(auth, vmid, volume, "rootdir")
            elif opt in ("memory", "swap"):
                self._check(auth, vm, ["VM.Config.Memory"])
            elif re.fullmatch(r"net\d+", opt):
                self._check(auth, vm, ["VM.Config.Network"])
                if oldconf and oldconf.get(opt):
                    self._check_vnet_access(auth, _parse_loose(_prop_format(opt), str(oldconf[opt])))
                if not deleting and newconf.get(opt):
                    self._check_vnet_access(auth, _parse_loose(_prop_format(opt), str(newconf[opt])))
            elif re.fullmatch(r"dev\d+", opt):
                raise _perm_exc("configuring device passthrough is only allowed for root@pam")
            elif opt in ("nameserver", "searchdomain", "hostname"):
                self._check(auth, vm, ["VM.Config.Network"])
            elif opt == "features":
                if not unprivileged:
                    raise _perm_exc("changing feature flags for privileged container is only allowed for root@pam")
                fmt = _prop_format("features")
                old = _parse_loose(fmt, str((oldconf or {}).get("features") or ""))
                nesting_changed = other_changed = False
                if not deleting and old:
                    new = _parse_loose(fmt, str(newconf["features"]))
                    changed = {k for k in set(old) | set(new) if old.get(k, "") != new.get(k, "")}
                    nesting_changed, other_changed = "nesting" in changed, bool(changed - {"nesting"})
                else:
                    # a new container (or no features before), or deleting them: as in the
                    # Perl, only a lone true 'nesting' counts as nesting (nesting=0 alone does not)
                    feats = old if deleting else _parse_loose(fmt, str(newconf["features"]))
                    if len(feats) == 1 and feats.get("nesting") not in (None, "", "0"):
                        nesting_changed = True
                    elif feats:
                        other_changed = True
                if other_changed:
                    raise _perm_exc("changing feature flags (except nesting) is only allowed for root@pam")
                if nesting_changed:
                    self._check(auth, vm, ["VM.Allocate"])
            elif opt == "hookscript":
                raise _perm_exc("changing the hookscript is only allowed for root@pam")
            else:
                # includes 'tags' (whose finer rules, GuestHelpers::assert_tag_permissions,
                # are not modelled)
                self._check(auth, vm, ["VM.Config.Options"])

        for opt in sorted(newconf):
            check(opt, False)
        for opt in delete:
            check(opt, True)

    # ---- tasks -----------------------------------------------------------------------

    def _new_task(self, auth: _Auth, node: str, ttype: str, tid: str, work: Callable[[], None] | None = None,
                  on_fail: Callable[[], None] | None = None) -> str:
        self._pstart += self._rng.randrange(1, 500)
        pid = self._rng.randrange(0x1000, 0x3FFFFF)
        starttime = int(time.time())
        upid = f"UPID:{node}:{pid:08X}:{self._pstart:08X}:{starttime:08X}:{ttype}:{tid}:{auth.authid}:"
        task = Task(upid, node, pid, self._pstart, starttime, ttype, tid, auth.authid,
                    time.monotonic() + self.task_seconds, work=work, on_fail=on_fail)
        for i, (ftype, message, fid, log) in enumerate(self._failures):
            if ftype == ttype and (fid is None or str(fid) == tid):
                del self._failures[i]
                task.injected = message
                task.lines.extend(log)
                break
        self._tasks[upid] = task
        return upid

    def _reap(self) -> None:
        now = time.monotonic()
        for task in self._tasks.values():
            if task.exitstatus is None and now >= task.ends_at:
                self._finish(task)

    def _finish(self, task: Task) -> None:
        try:
            if task.injected is not None:
                raise _TaskFail(task.injected)
            if task.work:
                task.work()
        except _TaskFail as exc:
            if task.on_fail:
                task.on_fail()
            msg = str(exc).rstrip("\n").replace("\n", " ")
            task.lines.append(f"TASK ERROR: {msg}")
            task.exitstatus = msg
        else:
            task.lines.append("TASK OK")
            task.exitstatus = "OK"

    def _find_task(self, node: str, upid: str) -> Task:
        if not re.fullmatch(r"UPID:[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?:[0-9A-Fa-f]{8}:[0-9A-Fa-f]{8,9}:"
                            r"[0-9A-Fa-f]{8}:[^:\s]+:[^:\s]*:[^:\s]+:", upid):
            raise _param_exc({"upid": "unable to parse worker upid"})
        task = self._tasks.get(upid)
        if task is None or task.node != node:
            raise _param_exc({"upid": "no such task"})
        return task

    def _check_task_owner(self, auth: _Auth, node: str, task: Task) -> None:
        if auth.authid != task.authid:
            self._check(auth, f"/nodes/{node}", ["Sys.Audit"])

    # ---- containers ------------------------------------------------------------------

    def _load_config(self, node: str, vmid: int) -> Container:
        ct = self._cts.get(vmid)
        if ct is None or ct.node != node:
            raise _die(f"Configuration file 'nodes/{node}/lxc/{vmid}.conf' does not exist")
        return ct

    def _check_vmid_unused(self, vmid: int) -> None:
        if vmid in self._cts:
            raise _die(f"CT {vmid} already exists on node '{self._cts[vmid].node}'")
        if vmid in self._qemu:
            raise _die(f"VM {vmid} already exists on node '{self._qemu[vmid]}'")

    @staticmethod
    def _check_lock(ct: Container) -> None:
        if ct.config.get("lock"):
            raise _TaskFail(f"CT {ct.vmid} is locked ({ct.config['lock']})")

    def _random_mac(self) -> str:
        # datacenter mac_prefix default BC:24:11 (not in the reference)
        return "BC:24:11:" + ":".join(f"{self._rng.randrange(256):02X}" for _ in range(3))

    def _config_value(self, key: str, value: str) -> Any:
        """A create/PUT value as PVE writes it: property strings re-printed (default
        key bare, booleans 1/0; net gets type=veth and a hwaddr when it has none),
        tags ';'-joined, the rest typed."""
        fmt = _prop_format(key)
        if fmt is not None:
            parsed = parse_property_string(fmt, value, key)
            if key.startswith("net"):
                # pve-container Config.pm parse_lxc_network (not in the reference)
                parsed.setdefault("type", "veth")
                parsed.setdefault("hwaddr", self._random_mac())
            if key.startswith("dev") and not parsed.get("path"):
                raise _die("Path has to be defined")
            return print_property_string(parsed, fmt)
        if key == "tags":  # GuestHelpers::get_unique_tags (not in the reference)
            return ";".join(sorted(set(split_list(value))))
        return _typed(key, value)

    def _allocate(self, vmid: int, key: str, value: str, default_storage: str,
                  allocated: list[Volume]) -> str:
        """A new disk ('STORAGE:GiB' or 'GiB') becomes a volume; others stay."""
        fmt = _prop_format(key)
        parsed = parse_property_string(fmt, value, key)
        m = _NEW_DISK_RE.fullmatch(parsed["volume"])
        if m:
            sid = m.group(1) or default_storage
            st = self.storages[sid]
            size = int(float(m.group(2)) * GiB)
            if size > st.avail:
                # representative text (lvcreate/zfs/dir each word it their own way)
                raise _TaskFail(f"unable to create CT {vmid} - no space left on device")
            n = 0
            while any(re.search(rf"(?:vm|subvol)-{vmid}-disk-{n}\b", v) for v in st.volumes):
                n += 1
            if st.type == "dir":
                volname, vfmt = f"{vmid}/vm-{vmid}-disk-{n}.raw", "raw"
            elif st.type == "zfspool":
                volname, vfmt = f"subvol-{vmid}-disk-{n}", "subvol"
            else:
                volname, vfmt = f"vm-{vmid}-disk-{n}", "raw"
            vol = Volume(f"{sid}:{volname}", "rootdir", vfmt, size, vmid)
            st.volumes[vol.volid] = vol
            st.avail -= size
            allocated.append(vol)
            parsed["volume"] = vol.volid
            parsed["size"] = format_size(size)
        return print_property_string(parsed, fmt)

    def _release(self, volumes: Iterable[Volume]) -> None:
        for vol in volumes:
            st = self.storages.get(vol.volid.split(":", 1)[0])
            if st and st.volumes.pop(vol.volid, None) is not None:
                st.avail += vol.size

    def _template_exists(self, ostemplate: str) -> bool:
        sid, sep, _ = ostemplate.partition(":")
        if sep and not ostemplate.startswith("/"):
            if sid not in self.storages:
                raise _TaskFail(f"storage '{sid}' does not exist")
            return ostemplate in self.storages[sid].volumes
        for st in self.storages.values():  # a host path: dir storages keep templates in <path>/template/cache
            if st.path and ostemplate.startswith(f"{st.path}/template/cache/"):
                if f"{st.storage}:vztmpl/{ostemplate.rsplit('/', 1)[1]}" in st.volumes:
                    return True
        return False

    def _addresses(self, ct: Container) -> list[dict[str, Any]]:
        ifaces = [{"name": "lo", "hwaddr": "00:00:00:00:00:00", "inet": "127.0.0.1/8", "inet6": "::1/128"}]
        host = ct.vmid if ct.vmid <= 254 else ct.vmid % 253 + 1
        for key in sorted((k for k in ct.config if re.fullmatch(r"net\d+", k)), key=lambda k: int(k[3:])):
            net = _parse_loose(_prop_format(key), str(ct.config[key]))
            entry: dict[str, Any] = {"name": net.get("name", key), "hwaddr": (net.get("hwaddr") or "").lower()}
            ip = net.get("ip")
            if ip == "dhcp":
                entry["inet"] = self.dhcp_addresses.get(ct.vmid, f"10.10.{10 + int(key[3:])}.{host}/24")
            elif ip and ip != "manual":
                entry["inet"] = ip
            ip6 = net.get("ip6")
            if ip6 and ip6 not in ("auto", "dhcp", "manual"):
                entry["inet6"] = ip6
            ifaces.append(entry)
        out = []
        for entry in ifaces:
            addrs = []
            for fam in ("inet", "inet6"):
                if entry.get(fam):
                    addr, _, prefix = entry[fam].partition("/")
                    addrs.append({"ip-address": addr, "ip-address-type": fam, "prefix": int(prefix or 0)})
            out.append({**entry, "hardware-address": entry["hwaddr"], "ip-addresses": addrs})
        return out

    def _ct_status(self, ct: Container) -> dict[str, Any]:
        conf = ct.config
        rootfs = _parse_loose(_prop_format("rootfs"), str(conf.get("rootfs") or ""))
        running = ct.status == "running"
        entry: dict[str, Any] = {
            "vmid": ct.vmid, "name": conf.get("hostname", f"CT{ct.vmid}"), "status": ct.status, "type": "lxc",
            "maxmem": int(conf.get("memory", 512)) * MiB, "maxswap": int(conf.get("swap", 512)) * MiB,
            "maxdisk": parse_size(rootfs["size"]) if rootfs.get("size") else 0,
            "cpus": conf.get("cores", self.node_cpus), "cpu": 0, "mem": 64 * MiB if running else 0, "disk": 0,
            "swap": 0, "uptime": int(time.time() - ct.started_at) if running and ct.started_at else 0,
            "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0,
        }
        for key in ("tags", "lock"):
            if conf.get(key):
                entry[key] = conf[key]
        if conf.get("template"):
            entry["template"] = 1
        return entry

    # ---- handlers: cluster and nodes -------------------------------------------------

    def _h_version(self, auth: _Auth, p: dict) -> Any:
        return dict(self.version)

    def _h_nodes(self, auth: _Auth, p: dict) -> Any:
        out = []
        for node in self.nodes:
            entry: dict[str, Any] = {"node": node, "status": "online", "type": "node", "id": f"node/{node}",
                                     "ssl_fingerprint": self.ssl_fingerprint, "level": ""}
            if self._check(auth, f"/nodes/{node}", ["Sys.Audit"], noerr=True):
                entry.update(cpu=0.02, maxcpu=self.node_cpus, mem=8 * GiB, maxmem=self.node_memory,
                             uptime=86400)
            out.append(entry)
        return out

    def _h_node_status(self, auth: _Auth, p: dict) -> Any:
        total = self.node_memory  # representative numbers
        return {
            "cpu": 0.02, "wait": 0.0, "uptime": 86400, "loadavg": ["0.10", "0.08", "0.05"],
            "cpuinfo": {"cores": self.node_cpus // 2, "cpus": self.node_cpus, "sockets": 1,
                        "model": "pve_double CPU", "mhz": "3000.000", "hvm": "1"},
            "memory": {"total": total, "used": 8 * GiB, "free": total - 8 * GiB, "available": total - 8 * GiB},
            "swap": {"total": 8 * GiB, "used": 0, "free": 8 * GiB},
            "rootfs": {"total": 100 * GiB, "used": 20 * GiB, "free": 80 * GiB, "avail": 80 * GiB},
            "pveversion": f"pve-manager/{self.version['version']}/{self.version['repoid']}",
            "kversion": "Linux 6.17.2-1-pve #1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1",
            "current-kernel": {"sysname": "Linux", "release": "6.17.2-1-pve", "machine": "x86_64",
                               "version": "#1 SMP PREEMPT_DYNAMIC PMX 6.17.2-1"},
            "boot-info": {"mode": "efi", "secureboot": 0},
            "ksm": {"shared": 0},
        }

    def _h_nextid(self, auth: _Auth, p: dict) -> Any:
        # The real server answers a JSON string here (a Perl scalar), although the
        # schema's 'returns' says integer (not in the reference).
        used = set(self._cts) | set(self._qemu)
        if p.get("vmid"):
            if int(p["vmid"]) in used:
                raise _param_exc({"vmid": f"VM {p['vmid']} already exists"})
            return str(int(p["vmid"]))
        vmid = 100
        while vmid in used:
            vmid += 1
        return str(vmid)

    def _h_resources(self, auth: _Auth, p: dict) -> Any:
        rtype = p.get("type")
        out: list[dict[str, Any]] = []
        if rtype in (None, "vm"):
            for ct in sorted(self._cts.values(), key=lambda c: c.vmid):
                if self._check(auth, f"/vms/{ct.vmid}", ["VM.Audit"], noerr=True):
                    st = self._ct_status(ct)
                    out.append({"id": f"lxc/{ct.vmid}", "type": "lxc", "node": ct.node, "vmid": ct.vmid,
                                "name": st["name"], "status": ct.status, "maxmem": st["maxmem"],
                                "maxdisk": st["maxdisk"], "maxcpu": st["cpus"], "template": st.get("template", 0),
                                **({"tags": st["tags"]} if "tags" in st else {})})
        if rtype in (None, "storage"):
            for node in self.nodes:
                for st in self.storages.values():
                    if self._check_any(auth, f"/storage/{st.storage}",
                                       ["Datastore.Audit", "Datastore.AllocateSpace"], noerr=True):
                        out.append({"id": f"storage/{node}/{st.storage}", "type": "storage", "node": node,
                                    "storage": st.storage, "plugintype": st.type, "status": "available",
                                    "content": ",".join(sorted(st.content)), "shared": 0,
                                    "disk": st.total - st.avail, "maxdisk": st.total})
        if rtype in (None, "node"):
            for node in self.nodes:
                entry: dict[str, Any] = {"id": f"node/{node}", "type": "node", "node": node, "status": "online"}
                if self._check(auth, f"/nodes/{node}", ["Sys.Audit"], noerr=True):
                    entry.update(maxcpu=self.node_cpus, maxmem=self.node_memory, cpu=0.02, mem=8 * GiB,
                                 uptime=86400)
                out.append(entry)
        return out

    def _h_permissions(self, auth: _Auth, p: dict) -> Any:
        target = p.get("userid") or auth.authid
        if target != auth.authid and not (not auth.tokenid and target.startswith(auth.userid + "!")):
            self._check(auth, "/access", ["Sys.Audit"])
        if "!" in target:
            if target not in self._tokens:
                raise _die(f"no such token '{target.split('!', 1)[1]}' for user '{target.split('!', 1)[0]}'")
            who = _Auth(*target.split("!", 1))
            paths = set(self._tokens[target].acl) | set(self._users[who.userid].acl)
        else:
            if target not in self._users:
                raise _die(f"no such user ('{target}')")
            who = _Auth(target)
            paths = set(self._users[target].acl)
        if who.userid == "root@pam":
            paths |= {"/"}
        if p.get("path"):
            paths = {p["path"]}
        out = {}
        for path in sorted(paths):
            privs = self.privileges(who, path)
            if privs:
                out[path] = {priv: 1 for priv in sorted(privs)}
        return out

    # ---- handlers: containers --------------------------------------------------------

    def _h_lxc_index(self, auth: _Auth, p: dict) -> Any:
        return [self._ct_status(ct) for ct in sorted(self._cts.values(), key=lambda c: c.vmid)
                if ct.node == p["node"] and self._check(auth, f"/vms/{ct.vmid}", ["VM.Audit"], noerr=True)]

    def _h_lxc_create(self, auth: _Auth, p: dict) -> Any:
        # Order as in pve-container API2/LXC.pm create_vm: its permission checks are in
        # the handler (the schema says user => 'all'), after parameter validation.
        param = dict(p)
        node = param.pop("node")
        vmid = int(param.pop("vmid"))
        for k in ("ignore-unpack-errors", "bwlimit", "ha-managed", "unique", "force", "password",
                  "ssh-public-keys"):
            param.pop(k, None)
        start_after = param.pop("start", "0") == "1"
        unpriv_param = param.pop("unprivileged", None)
        if param.pop("restore", "0") == "1":
            raise _die("pve_double: restore is not modelled")
        unprivileged = unpriv_param != "0"  # default on create: 1
        if not unprivileged:
            self._check(auth, "/", ["Sys.Modify"])
        self._check_vmid_unused(vmid)
        if param.pop("pool", None) is not None:
            raise _die("pve_double: pools are not modelled")
        if not self._check(auth, f"/vms/{vmid}", ["VM.Allocate"], noerr=True):
            raise _perm_exc()  # raise_perm_exc() without arguments: "Permission check failed"
        ostemplate = param.pop("ostemplate")
        storage = param.pop("storage", "local")
        self._check_ct_modify_config_perm(auth, vmid, None, param, [], unprivileged, storage)
        if ostemplate == "-":
            raise _die("pipe requires cli environment")
        self._check_volume_access(auth, vmid, ostemplate, "vztmpl")
        mp_param, no_disk = {}, {}
        for k, v in param.items():
            if k == "rootfs" or re.fullmatch(r"mp\d+", k):
                mp_param[k] = f"{storage}:{v}" if re.fullmatch(r"\d+(\.\d+)?", v) else v
            elif not re.fullmatch(r"unused\d+", k):  # unused volumes are ignored on create
                no_disk[k] = v
        if mp_param and "rootfs" not in mp_param:
            raise _die("mount points configured, but 'rootfs' not set - aborting")

        def check_and_activate_storage(sid: str) -> None:
            st = self.storages.get(sid)
            if st is None:
                raise _die(f"storage '{sid}' does not exist")
            if "rootdir" not in st.content:
                raise _param_exc({"storage": f"storage '{sid}' does not support container directories"})
            self._check(auth, f"/storage/{sid}", ["Datastore.AllocateSpace"])

        for k in sorted(mp_param):
            volume = parse_property_string(_prop_format(k), mp_param[k], k)["volume"]
            if volume.startswith("/"):
                if auth.authid != "root@pam":
                    raise _die("Only root can pass arbitrary filesystem paths.")
                continue
            check_and_activate_storage(volume.split(":", 1)[0])
        if "rootfs" not in mp_param:
            check_and_activate_storage(storage)
            mp_param["rootfs"] = f"{storage}:4"  # defaults to 4 GiB
        conf = {k: self._config_value(k, v) for k, v in no_disk.items()}
        self._check_writable(conf)
        if unprivileged:
            conf["unprivileged"] = 1
        ct = Container(vmid, node, {"lock": "create"})  # create_and_lock_config
        self._cts[vmid] = ct
        allocated: list[Volume] = []

        def work() -> None:
            for k in sorted(mp_param, key=lambda x: (x != "rootfs", x)):
                conf[k] = self._allocate(vmid, k, mp_param[k], storage, allocated)
            if not self._template_exists(ostemplate):
                raise _TaskFail(f"unable to create CT {vmid} - can't find file '{ostemplate}'")
            fname = ostemplate.rsplit("/", 1)[-1]
            conf.setdefault("arch", "amd64")  # detected from the template by PVE
            guess = re.split(r"[-_]", fname, maxsplit=1)[0]
            if "ostype" not in conf and guess in _OSTYPES:
                conf["ostype"] = guess  # PVE detects it inside the template; guessed from its name here
            conf.setdefault("hostname", f"CT{vmid}")
            conf["memory"] = conf.get("memory") or 512
            conf.setdefault("swap", 512)
            ct.config = conf
            if start_after:
                ct.status, ct.started_at = "running", time.time()

        def on_fail() -> None:
            self._release(allocated)
            self._cts.pop(vmid, None)

        def wrapped_work() -> None:
            try:
                work()
            except _TaskFail as exc:
                msg = str(exc)
                if not msg.startswith(f"unable to create CT {vmid} - "):
                    msg = f"unable to create CT {vmid} - {msg}"
                raise _TaskFail(msg) from None

        return self._new_task(auth, node, "vzcreate", str(vmid), wrapped_work, on_fail)

    def _h_lxc_destroy(self, auth: _Auth, p: dict) -> Any:
        vmid = int(p["vmid"])
        ct = self._load_config(p["node"], vmid)
        if ct.config.get("protection"):
            raise _die(f"can't remove CT {vmid} - protection mode enabled")
        if ct.config.get("lock"):
            raise _die(f"CT {vmid} is locked ({ct.config['lock']})")
        force = p.get("force") == "1"
        if ct.status == "running" and not force:
            raise _die(f"unable to destroy CT {vmid} - container is running")

        def work() -> None:
            if vmid not in self._cts:
                raise _TaskFail(f"Configuration file 'nodes/{p['node']}/lxc/{vmid}.conf' does not exist")
            if ct.status == "running" and force:  # "forced to stop CT before destroying"
                ct.status = "stopped"
            for st in self.storages.values():
                self._release([v for v in list(st.volumes.values()) if v.vmid == vmid])
            self._cts.pop(vmid, None)

        return self._new_task(auth, p["node"], "vzdestroy", str(vmid), work)

    def _h_config_get(self, auth: _Auth, p: dict) -> Any:
        vmid = int(p["vmid"])
        ct = self._load_config(p["node"], vmid)
        if p.get("snapshot"):
            if p["snapshot"] not in ct.snapshots:  # only a file-backed double has any
                raise _die(f"snapshot '{p['snapshot']}' does not exist")
            conf = copy.deepcopy(ct.snapshots[p["snapshot"]])
        else:
            conf = copy.deepcopy(ct.config)
        conf["digest"] = self._ct_digest(ct)
        return conf

    def _h_config_put(self, auth: _Auth, p: dict) -> Any:
        param = dict(p)
        node = param.pop("node")
        vmid = int(param.pop("vmid"))
        digest = param.pop("digest", None)
        if not param:
            raise _die("no options specified")
        delete = split_list(param.pop("delete", ""))
        param.pop("revert", None)  # pending changes are not modelled
        existing = self._cts.get(vmid)
        oldconf = existing.config if existing and existing.node == node else None
        unprivileged = bool(oldconf.get("unprivileged")) if oldconf else False
        self._check_ct_modify_config_perm(auth, vmid, oldconf, param, delete, unprivileged, "local")
        for opt in delete:
            if opt in param:
                raise _param_exc({"delete": f"you can't use '-{opt}' and -delete {opt}' at the same time"})
        ct = self._load_config(node, vmid)
        if ct.config.get("lock"):
            raise _die(f"CT {vmid} is locked ({ct.config['lock']})")
        if digest is not None and digest != self._ct_digest(ct):
            raise _die("detected modified configuration - file changed by other user? Try again.")
        new = {k: self._config_value(k, v) for k, v in param.items()}
        self._check_writable(new)
        for opt in delete:
            ct.config.pop(opt, None)
        # Applied at once (PVE keeps some changes pending on a running CT), and a new
        # disk ('STORAGE:GiB') in rootfs/mp[n] is stored as sent, not allocated.
        ct.config.update(new)
        return None

    def _h_status_current(self, auth: _Auth, p: dict) -> Any:
        ct = self._load_config(p["node"], int(p["vmid"]))
        return {**self._ct_status(ct), "ha": {"managed": 0}}

    def _power_task(self, auth: _Auth, p: dict, ttype: str, want_running: bool) -> str:
        vmid = int(p["vmid"])
        if p.get("skiplock") == "1" and auth.authid != "root@pam":
            raise _param_exc({"skiplock": "Only root may use this option."})
        ct = self._load_config(p["node"], vmid)
        if want_running and ct.status == "running":
            raise _die(f"CT {vmid} already running")
        if not want_running and ct.status != "running":
            raise _die(f"CT {vmid} not running")

        def work() -> None:
            if p.get("skiplock") != "1":
                self._check_lock(ct)
            if ttype == "vzstart":
                if ct.config.get("template"):
                    raise _TaskFail("you can't start a CT if it's a template")
                ct.status, ct.started_at = "running", time.time()
            elif ttype == "vzreboot":
                ct.started_at = time.time()
            else:
                ct.status, ct.started_at = "stopped", None

        return self._new_task(auth, p["node"], ttype, str(vmid), work)

    def _h_start(self, auth: _Auth, p: dict) -> Any:
        return self._power_task(auth, p, "vzstart", True)

    def _h_stop(self, auth: _Auth, p: dict) -> Any:
        return self._power_task(auth, p, "vzstop", False)

    def _h_shutdown(self, auth: _Auth, p: dict) -> Any:
        return self._power_task(auth, p, "vzshutdown", False)

    def _h_reboot(self, auth: _Auth, p: dict) -> Any:
        return self._power_task(auth, p, "vzreboot", False)

    def _h_interfaces(self, auth: _Auth, p: dict) -> Any:
        ct = self._load_config(p["node"], int(p["vmid"]))
        # A stopped CT has no network namespace: PVE's get_interfaces returns nothing
        # (data null).  Not in the reference.
        return self._addresses(ct) if ct.status == "running" else None

    # ---- handlers: tasks -------------------------------------------------------------

    def _h_task_status(self, auth: _Auth, p: dict) -> Any:
        task = self._find_task(p["node"], p["upid"])
        self._check_task_owner(auth, p["node"], task)
        user, _, tokenid = task.authid.partition("!")
        out: dict[str, Any] = {"upid": task.upid, "node": task.node, "pid": task.pid, "pstart": task.pstart,
                               "starttime": task.starttime, "type": task.type, "id": task.id, "user": user,
                               "status": task.status}
        if tokenid:
            out["tokenid"] = tokenid
        if task.exitstatus is not None:
            out["exitstatus"] = task.exitstatus
        return out

    def _h_task_log(self, auth: _Auth, p: dict) -> Any:
        task = self._find_task(p["node"], p["upid"])
        self._check_task_owner(auth, p["node"], task)
        if p.get("download") == "1":
            raise _die("pve_double: download=1 is not modelled")
        start, limit = int(p.get("start", 0)), int(p.get("limit", 50))
        lines = task.lines
        if not lines:
            return _Result([{"n": 1, "t": "no content"}], 1)
        data = [{"n": i + 1, "t": t} for i, t in enumerate(lines) if start <= i < start + limit]
        return _Result(data, len(lines))

    # ---- handlers: storage and templates ---------------------------------------------

    def _h_storage_index(self, auth: _Auth, p: dict) -> Any:
        want = set(split_list(p.get("content", "")))
        out = []
        for st in sorted(self.storages.values(), key=lambda s: s.storage):
            if p.get("storage") and st.storage != p["storage"]:
                continue
            if want and not want & set(st.content):
                continue
            if not self._check_any(auth, f"/storage/{st.storage}", ["Datastore.Audit", "Datastore.AllocateSpace"],
                                   noerr=True):
                continue
            used = st.total - st.avail
            out.append({"storage": st.storage, "type": st.type, "content": ",".join(sorted(st.content)),
                        "active": 1, "enabled": 1, "shared": 0, "total": st.total, "used": used,
                        "avail": st.avail, "used_fraction": used / st.total if st.total else 0})
        return out

    def _h_storage_content(self, auth: _Auth, p: dict) -> Any:
        st = self.storages.get(p["storage"])
        if st is None:
            raise _die(f"storage '{p['storage']}' does not exist")
        out = []
        for vol in sorted(st.volumes.values(), key=lambda v: v.volid):
            if p.get("content") and vol.content != p["content"]:
                continue
            if p.get("vmid") and vol.vmid != int(p["vmid"]):
                continue
            entry = {"volid": vol.volid, "content": vol.content, "format": vol.format, "size": vol.size,
                     "ctime": vol.ctime}
            if vol.vmid is not None:
                entry["vmid"] = vol.vmid
            out.append(entry)
        return out

    def _h_aplinfo(self, auth: _Auth, p: dict) -> Any:
        return [{k: v for k, v in a.items() if k != "size"} for a in self.appliances]

    def _h_apl_download(self, auth: _Auth, p: dict) -> Any:
        # pve-manager API2/Nodes.pm apl_download as read (not in the reference): an
        # unknown template is a parameter error; the task type is 'download'.
        appliance = next((a for a in self.appliances if a["template"] == p["template"]), None)
        if appliance is None:
            raise _param_exc({"template": "no such template"})
        st = self.storages.get(p["storage"])
        if st is None:
            raise _die(f"storage '{p['storage']}' does not exist")
        if "vztmpl" not in st.content:
            raise _die(f"storage '{p['storage']}' does not support templates")
        volid = f"{st.storage}:vztmpl/{appliance['template']}"

        def work() -> None:
            self.add_template(volid, size=int(appliance.get("size", 100 * MiB)))

        return self._new_task(auth, p["node"], "download", appliance["template"], work)


# --------------------------------------------------------------------------------------
# Helpers over the config schema
# --------------------------------------------------------------------------------------


def _prop_format(key: str) -> dict | None:
    schema = _schema_lookup(_CONFIG_PROPS, key) or _schema_lookup(_CREATE_PROPS, key)
    fmt = schema.get("format") if schema else None
    return fmt if isinstance(fmt, dict) else None


def _parse_loose(fmt: dict | None, value: str) -> dict[str, str]:
    """Parse a stored property string; {} when it does not parse (foreign configs)."""
    if not fmt or not value:
        return {}
    try:
        return parse_property_string(fmt, value)
    except _FormatError:
        return {}


def _typed(key: str, value: Any) -> Any:
    """A config value typed the way GET config returns it."""
    schema = _schema_lookup(_CONFIG_PROPS, key) or _schema_lookup(_CREATE_PROPS, key)
    if schema is None or isinstance(value, (list, dict)):
        return value
    text = ("1" if value else "0") if isinstance(value, bool) else _num_text(value)
    typ = schema.get("type")
    if typ == "boolean":
        b = parse_boolean(text)
        return int(b) if b is not None else text
    if typ == "integer" and _is_integer(text):
        return int(text)
    if typ == "number" and _is_number(text):
        return int(text) if _is_integer(text) else float(text)
    return text


_FILE_ONLY_KEYS = {"parent": "string", "snaptime": "integer"}  # Config.pm $confdesc, not settable


def _check_type_from_file(key: str, text: str) -> Any:
    """Config.pm check_type for a value read from a file: the typed value, or
    ValueError with PVE's message (the caller keeps the text and warns)."""
    schema = _schema_lookup(_CONFIG_PROPS, key) or _schema_lookup(_CREATE_PROPS, key)
    if key in ("node", "vmid", "digest", "delete", "revert") or (schema is None and key not in _FILE_ONLY_KEYS):
        raise ValueError(f"unknown setting '{key}'\n")
    typ = schema.get("type") if schema else _FILE_ONLY_KEYS[key]
    if re.search(r"[\n\r]", text):
        raise ValueError("property contains a line feed\n")
    if typ == "boolean":
        if parse_boolean(text) is None:
            raise ValueError(f"type check ('boolean') failed - got '{text}'\n")
    elif typ == "integer":
        if not re.fullmatch(r"\d+", text):
            raise ValueError(f"type check ('integer') failed - got '{text}'\n")
    elif typ == "number":
        if not re.fullmatch(r"\d+(\.\d+)?", text):
            raise ValueError(f"type check ('number') failed - got '{text}'\n")
    elif schema and schema.get("format"):
        try:
            check_format(schema["format"], text)
        except _FormatError as exc:
            raise ValueError(str(exc)) from None
    if schema is None:  # parent, snaptime
        return int(text) if typ == "integer" else text
    return _typed(key, text)


def _digest(conf: Mapping[str, Any]) -> str:
    text = "".join(f"{k}: {json.dumps(conf[k], sort_keys=True)}\n" for k in sorted(conf))
    return hashlib.sha1(text.encode()).hexdigest()


# --------------------------------------------------------------------------------------
# HTTPS server
# --------------------------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    timeout = 30
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: "_Server"

    def handle(self) -> None:
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError):  # e.g. a client that does not trust the CA
            self.close_connection = True
            return
        try:
            super().handle()
        except (ConnectionError, ssl.SSLError, TimeoutError):
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:
        self.server.double._serve(self, "GET")

    def do_POST(self) -> None:
        self.server.double._serve(self, "POST")

    def do_PUT(self) -> None:
        self.server.double._serve(self, "PUT")

    def do_DELETE(self) -> None:
        self.server.double._serve(self, "DELETE")


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], ctx: ssl.SSLContext, double: PVEDouble):
        self.ctx, self.double = ctx, double
        super().__init__(addr, _Handler)

    def get_request(self):  # the TLS handshake happens in the handler thread
        sock, addr = self.socket.accept()
        return self.ctx.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def handle_error(self, request, client_address) -> None:
        self.double.internal_errors.append(traceback.format_exc())


# --------------------------------------------------------------------------------------
# Certificates: a CA to trust (like pve-root-ca.pem) and a node certificate it signs
# --------------------------------------------------------------------------------------


def make_certificates(directory: str, backend: str = "auto") -> tuple[str, str, str]:
    """Write ca.pem, node.pem, node.key (node cert for CN 127.0.0.1, SAN 127.0.0.1 and
    localhost); returns (ca_path, cert_path, key_path).  Uses `cryptography` when it
    is importable, else the openssl command."""
    if backend in ("auto", "cryptography"):
        try:
            return _certs_cryptography(directory)
        except ImportError:
            if backend == "cryptography":
                raise
    return _certs_openssl(directory)


def _certs_cryptography(directory: str) -> tuple[str, str, str]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pve_double test CA"),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "pve_double (not Proxmox VE)")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(ca_ski, critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = tuple(os.path.join(directory, n) for n in ("ca.pem", "node.pem", "node.key"))
    with open(paths[0], "wb") as fh:
        fh.write(ca.public_bytes(serialization.Encoding.PEM))
    with open(paths[1], "wb") as fh:
        fh.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(paths[2], "wb") as fh:
        fh.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                   serialization.NoEncryption()))
    return paths  # type: ignore[return-value]


def _certs_openssl(directory: str) -> tuple[str, str, str]:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=pve_double test CA/O=pve_double (not Proxmox VE)",
        "-addext", "basicConstraints=critical,CA:TRUE,pathlen:0",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", *ec, "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1")
    with open(os.path.join(directory, "node.ext"), "w", encoding="ascii") as fh:
        fh.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                 "keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
                 "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    run("x509", "-req", "-in", "node.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-set_serial",
        str(random.getrandbits(63)), "-days", "2", "-out", "node.pem", "-extfile", "node.ext")
    return tuple(os.path.join(directory, n) for n in ("ca.pem", "node.pem", "node.key"))  # type: ignore
