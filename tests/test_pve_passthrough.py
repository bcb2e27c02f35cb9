"""Role pve_container's node module: what `pct set` must change, and the raw lines' edit of VMID.conf.

The plans are pure functions (the devN one shared with the API module, module_utils/pve_devices.py); the module running them over SSH on a node stand-in, with a pct
stand-in editing the file the way PVE does, is tested in tests/test_lxc_proxmox.py.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROLE = ROOT / "roles" / "pve_container"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# As Ansible runs them: the role's module_utils importable under ansible.module_utils.
devices = _load("ansible.module_utils.pve_devices", ROLE / "module_utils" / "pve_devices.py")
pt = _load("pve_passthrough", ROLE / "library" / "pve_passthrough.py")

WANT = {"dev0": "/dev/nvidia0,gid=44", "dev1": "/dev/nvidiactl,gid=44", "dev2": "/dev/nvidia-uvm,gid=44"}


def test_nothing_to_do_when_every_node_is_passed_whatever_its_index_or_spelling():
    have = {"dev3": "/dev/nvidia0,gid=44", "dev0": "path=/dev/nvidiactl,gid=44", "dev1": "/dev/nvidia-uvm,gid=44",
            "dev5": "/dev/dri/renderD128"}
    assert devices.plan_devices(WANT, have) == ({}, [])


def test_missing_nodes_take_free_indexes_stale_nvidia_entries_go_and_the_users_own_stay():
    have = {"dev0": "/dev/dri/renderD128", "dev1": "/dev/nvidia1,gid=44", "dev2": "/dev/nvidia0,gid=44"}
    to_set, stale = devices.plan_devices(WANT, have)
    # dev1 (a card no longer on the host) is reused, the user's /dev/dri entry is not touched.
    assert to_set == {"dev1": "/dev/nvidiactl,gid=44", "dev3": "/dev/nvidia-uvm,gid=44"}
    assert stale == []
    to_set, stale = devices.plan_devices({"dev0": "/dev/nvidia0,gid=44"}, have)
    assert to_set == {} and stale == ["dev1"]


def test_a_changed_option_rewrites_the_entry_in_place():
    to_set, stale = devices.plan_devices({"dev0": "/dev/nvidia0,gid=44"}, {"dev4": "/dev/nvidia0,gid=0,mode=0666"})
    assert to_set == {"dev4": "/dev/nvidia0,gid=44"} and stale == []


CONF = """#Managed by ollama-provisioner
arch: amd64
cores: 4
hostname: ollama
lxc.cgroup2.devices.allow: c 10:200 rwm
lxc.cgroup2.devices.allow: c 508:* rwm
lxc.mount.entry: /dev/nvidia1 dev/nvidia1 none bind,optional,create=file
memory: 8192
unprivileged: 1

[before-upgrade]
cores: 2
lxc.cgroup2.devices.allow: c 508:* rwm
snaptime: 1700000000
"""
WANT_RAW = ["lxc.cgroup2.devices.allow: c 195:* rwm", "lxc.cgroup2.devices.allow: c 511:* rwm",
            "lxc.mount.entry: /dev/nvidia0 dev/nvidia0 none bind,optional,create=file"]


def test_raw_lines_are_replaced_in_the_main_section_only_and_others_kept():
    after = pt.plan_raw(CONF, WANT_RAW, {195, 508, 511})
    main, _, snapshot = after.partition("\n[before-upgrade]\n")
    assert "lxc.cgroup2.devices.allow: c 10:200 rwm" in main  # not an NVIDIA major: the user's
    assert "c 508:* rwm" not in main and "/dev/nvidia1" not in main  # ours, no longer wanted
    for line in WANT_RAW:
        assert line in main
    # The snapshot is history: left as it was.
    assert snapshot == "cores: 2\nlxc.cgroup2.devices.allow: c 508:* rwm\nsnaptime: 1700000000\n"
    assert after.startswith("#Managed by ollama-provisioner\narch: amd64\n")
    # Applying again changes nothing.
    assert pt.plan_raw(after, WANT_RAW, {195, 508, 511}) == after


def test_raw_lines_reach_a_config_without_snapshots_and_spacing_does_not_matter():
    conf = "arch: amd64\nhostname: ollama\n"
    after = pt.plan_raw(conf, WANT_RAW, {195, 511})
    assert after == conf + "\n".join(WANT_RAW) + "\n"
    assert pt.plan_raw(after.replace(": c 195", ":c 195"), WANT_RAW, {195, 511}) == after.replace(": c 195", ":c 195")
