"""The Proxmox VE container config file format (``/etc/pve/lxc/<vmid>.conf``), for tests only.

A stand-in's own code, not Proxmox VE's: it is shared by the API test double
(tests/pve_double.py, in its file-backed mode) and by the node stand-in's ``pct``
(tests/pve_node/pct, copied next to this file into the node image), so that the
two read and write the one file the same way, as pmxcfs makes the API and the
``pct`` CLI share one file on a real node.  Stdlib only (it runs inside the node
image too).

Built from pve-container ``src/PVE/LXC/Config.pm`` (parse_pct_config,
write_pct_config, is_valid_lxc_conf_key, $valid_lxc_conf_keys,
$deprecated_lxc_conf_keys; the pve-container 6.x version read through the search
tool) and pve-common ``src/PVE/Tools.pm`` (encode_text / decode_text):

- the description is kept as ``#`` comment lines at the top, each line
  encode_text()-escaped; reading appends a newline per comment line (so a
  description "x" written through the API reads back as "x\\n", as on PVE);
- the other keys follow as ``key: value`` lines in sorted order, then the raw
  ``lxc.*`` keys in their own order as ``lxc.key: value`` lines;
- then ``[pve:pending]`` and ``[snapshot]`` sections, each in the same shape;
- reading keeps unknown keys and values that fail their type check (PVE warns and
  keeps them) and drops invalid ``lxc.*`` keys, with a warning each, worded as
  PVE's warn() lines.

What it cannot prove: that pmxcfs itself behaves like a plain directory (it has
size limits, no partial writes, and a cluster-wide view); type checks are the
caller's (``check_type``), so a value is only as well checked as that callback.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import quote, unquote_to_bytes

STANDIN_DIR = ".standin"  # <config dir>/.standin/<vmid>.status: the stand-in's own, not pmxcfs

# Config.pm $valid_lxc_conf_keys: 1 = valid, a string = refused with that message.
VALID_LXC_CONF_KEYS: dict[str, Any] = {k: 1 for k in """
    lxc.apparmor.profile lxc.apparmor.allow_incomplete lxc.apparmor.allow_nesting lxc.apparmor.raw
    lxc.selinux.context lxc.include lxc.arch lxc.uts.name lxc.signal.halt lxc.signal.reboot
    lxc.signal.stop lxc.init.cmd lxc.init.cwd lxc.pty.max lxc.console.logfile lxc.console.path
    lxc.tty.max lxc.devtty.dir lxc.hook.autodev lxc.autodev lxc.kmsg lxc.mount.fstab lxc.mount.entry
    lxc.mount.auto lxc.rootfs.mount lxc.cap.drop lxc.cap.keep lxc.seccomp.profile
    lxc.seccomp.notify.proxy lxc.seccomp.notify.cookie lxc.idmap lxc.hook.pre-start
    lxc.hook.pre-mount lxc.hook.mount lxc.hook.start lxc.hook.stop lxc.hook.post-stop
    lxc.hook.clone lxc.hook.destroy lxc.hook.version lxc.log.level lxc.log.file lxc.start.auto
    lxc.start.delay lxc.start.order lxc.group lxc.environment lxc.environment.runtime
    lxc.environment.hooks lxc.sysctl.fs.mqueue lxc.sysctl.kernel.msgmax lxc.sysctl.kernel.msgmnb
    lxc.sysctl.kernel.msgmni lxc.sysctl.kernel.sem lxc.sysctl.kernel.shmall
    lxc.sysctl.kernel.shmmax lxc.sysctl.kernel.shmmni lxc.sysctl.kernel.shm_rmid_forced
""".split()}
VALID_LXC_CONF_KEYS["lxc.rootfs.path"] = "lxc.rootfs.path is auto generated from rootfs"
VALID_LXC_CONF_KEYS["lxc.rootfs.options"] = (
    'lxc.rootfs.options is not supported, please use mount point options in the "rootfs" key')

# Config.pm $deprecated_lxc_conf_keys (removed with lxc 3.0): still read, with a warning.
DEPRECATED_LXC_CONF_KEYS = {
    "lxc.aa_profile": "lxc.apparmor.profile", "lxc.aa_allow_incomplete": "lxc.apparmor.allow_incomplete",
    "lxc.console": "lxc.console.path", "lxc.devttydir": "lxc.tty.dir", "lxc.haltsignal": "lxc.signal.halt",
    "lxc.rebootsignal": "lxc.signal.reboot", "lxc.stopsignal": "lxc.signal.stop", "lxc.id_map": "lxc.idmap",
    "lxc.init_cmd": "lxc.init.cmd", "lxc.loglevel": "lxc.log.level", "lxc.logfile": "lxc.log.file",
    "lxc.mount": "lxc.mount.fstab", "lxc.network.type": "lxc.net.INDEX.type",
    "lxc.network.flags": "lxc.net.INDEX.flags", "lxc.network.link": "lxc.net.INDEX.link",
    "lxc.network.mtu": "lxc.net.INDEX.mtu", "lxc.network.name": "lxc.net.INDEX.name",
    "lxc.network.hwaddr": "lxc.net.INDEX.hwaddr", "lxc.network.ipv4": "lxc.net.INDEX.ipv4.address",
    "lxc.network.ipv4.gateway": "lxc.net.INDEX.ipv4.gateway", "lxc.network.ipv6": "lxc.net.INDEX.ipv6.address",
    "lxc.network.ipv6.gateway": "lxc.net.INDEX.ipv6.gateway", "lxc.network.script.up": "lxc.net.INDEX.script.up",
    "lxc.network.script.down": "lxc.net.INDEX.script.down", "lxc.pts": "lxc.pty.max",
    "lxc.se_context": "lxc.selinux.context", "lxc.seccomp": "lxc.seccomp.profile", "lxc.tty": "lxc.tty.max",
    "lxc.utsname": "lxc.uts.name",
}

# write_pct_config skips these keys in the "key: value" lines
_NOT_WRITTEN = ("digest", "description", "pending", "snapshots", "snapname", "lxc")


def encode_text(text: str) -> str:
    """PVE::Tools::encode_text: UTF-8, then %XX for every byte outside 0x20-0x39 and
    0x3b-0x7e (control and high-bit bytes, and ':').  '%' itself is not escaped."""
    return quote(text.encode("utf-8"), safe="".join(chr(c) for c in range(0x20, 0x7f) if c != 0x3a))


def decode_text(data: str) -> str:
    """PVE::Tools::decode_text: uri_unescape, then UTF-8 decode."""
    return unquote_to_bytes(data).decode("utf-8", "replace")


def is_valid_lxc_conf_key(vmid: int | str, key: str, warnings: list[str]) -> Any:
    """Config.pm is_valid_lxc_conf_key: 1, an error message, or 0."""
    if key.startswith("lxc.limit."):
        warnings.append(f"vm {vmid} - {key}: lxc.limit.* was renamed to lxc.prlimit.*")
        return 1
    if key in DEPRECATED_LXC_CONF_KEYS:
        warnings.append(f"vm {vmid} - {key} is deprecated and was renamed to {DEPRECATED_LXC_CONF_KEYS[key]}")
        return 1
    if key in VALID_LXC_CONF_KEYS:
        return VALID_LXC_CONF_KEYS[key]
    if re.match(r"lxc\.cgroup2?\.", key) or key.startswith(("lxc.prlimit.", "lxc.net.")):
        return 1
    return 0


@dataclass
class PctConfig:
    """One parsed file: the main section, [pve:pending], the snapshot sections and
    what PVE would have warned about while reading it."""

    main: dict[str, Any] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    snapshots: dict[str, dict[str, Any]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


CheckType = Callable[[str, str], Any]  # (key, text) -> typed value; raises ValueError(message)


def parse_pct_config(raw: str, vmid: int | str, check_type: CheckType | None = None) -> PctConfig:
    """Config.pm parse_pct_config.  check_type(key, text) returns the typed value or
    raises ValueError with PVE's message (the value is then kept as text, with a
    warning); without it every value stays text."""
    res = PctConfig()
    conf = res.main
    descr = ""
    section = ""

    def close_descr() -> None:
        nonlocal descr
        if descr and descr != "0":  # Perl: `if $descr` ("0" is false)
            conf["description"] = descr
        descr = ""

    for line in raw.split("\n"):
        if re.fullmatch(r"\s*", line):
            continue
        if re.fullmatch(r"(?i)\[pve:pending\]\s*", line):
            close_descr()
            section, conf = "pending", res.pending
            continue
        m = re.fullmatch(r"(?i)\[([a-z][a-z0-9_\-]+)\]\s*", line)
        if m:
            close_descr()
            section = m.group(1)
            conf = res.snapshots.setdefault(section, {})
            continue
        m = re.fullmatch(r"#(.*)", line)
        if m:
            descr += decode_text(m.group(1)) + "\n"
            continue
        m = re.fullmatch(r"(lxc\.[a-z0-9_\-.]+)(:|\s*=)\s*(.*?)\s*", line)
        if m:
            key, value = m.group(1), m.group(3)
            validity = is_valid_lxc_conf_key(vmid, key, res.warnings)
            if validity == 1:
                conf.setdefault("lxc", []).append([key, value])
            elif validity:
                res.warnings.append(f"vm {vmid} - {key}: {validity}")
            else:
                res.warnings.append(f"vm {vmid} - unable to parse config: {line}")
            continue
        m = re.fullmatch(r"(description):\s*(.*\S)\s*", line)
        if m:
            descr += decode_text(m.group(2))
            continue
        m = re.search(r"snapstate:\s*(prepare|delete)\s*$", line)
        if m:
            conf["snapstate"] = m.group(1)
            continue
        m = re.fullmatch(r"delete:\s*(.*\S)\s*", line)
        if m:
            if section == "pending":
                conf["delete"] = m.group(1)
            else:
                res.warnings.append(f"vm {vmid} - property 'delete' is only allowed in [pve:pending]")
            continue
        m = re.fullmatch(r"([a-z][a-z_]*\d*):\s*(.+?)\s*", line)
        if m:
            key, value = m.group(1), m.group(2)
            if check_type is not None:
                try:
                    value = check_type(key, value)
                except ValueError as exc:
                    msg = str(exc)
                    res.warnings.append(f"vm {vmid} - unable to parse value of '{key}' - {msg}".rstrip("\n"))
            conf[key] = value
            continue
        res.warnings.append(f"vm {vmid} - unable to parse config: {line}")
    close_descr()
    res.main.pop("snapstate", None)  # "just to be sure", as PVE does
    return res


def value_text(value: Any) -> str:
    """A config value as the file (and pct config) writes it."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _generate(conf: dict[str, Any]) -> str:
    raw = ""
    descr = conf.get("description") or ""
    if descr == "0":
        descr = ""
    lines = str(descr).split("\n")
    while lines and lines[-1] == "":  # Perl split() drops trailing empty fields
        lines.pop()
    for line in lines:
        raw += "#" + encode_text(line) + "\n"
    for key in sorted(conf):
        if key in _NOT_WRITTEN or key == "snapstate":
            continue
        value = value_text(conf[key])
        if "\n" in value:
            raise ValueError(f"detected invalid newline inside property '{key}'")
        raw += f"{key}: {value}\n"
    for key, value in conf.get("lxc") or []:
        raw += f"{key}: {value}\n"
    return raw


def write_pct_config(main: dict[str, Any], pending: dict[str, Any] | None = None,
                     snapshots: dict[str, dict[str, Any]] | None = None) -> str:
    """Config.pm write_pct_config (the unusedN clean-up it also does is not modelled).
    Raises ValueError for a value with a newline, as PVE dies then."""
    raw = _generate(main)
    if pending:
        raw += "\n[pve:pending]\n" + _generate(pending)
    for name in sorted(snapshots or {}):
        raw += f"\n[{name}]\n" + _generate(snapshots[name])
    return raw


# ---- where things are, on a node or in a test's config dir ----------------------------


def config_path(etc_pve: Path | str, node: str, vmid: int | str) -> Path:
    """cfs_config_path: nodes/<node>/lxc/<vmid>.conf below /etc/pve."""
    return Path(etc_pve) / "nodes" / node / "lxc" / f"{vmid}.conf"


def status_path(etc_pve: Path | str, vmid: int | str) -> Path:
    """The stand-in's run state of a container (not part of pmxcfs)."""
    return Path(etc_pve) / STANDIN_DIR / f"{vmid}.status"


def write_file(path: Path, text: str) -> None:
    """PVE::Tools::file_set_contents: a '<file>.tmp.<pid>' next to it, then rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


def read_status(etc_pve: Path | str, vmid: int | str) -> str | None:
    try:
        return status_path(etc_pve, vmid).read_text(encoding="ascii").strip() or None
    except OSError:
        return None
