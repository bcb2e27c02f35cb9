"""A rendered plain-LXC config started for real with lxc-start.

The host has no NVIDIA driver, so the test makes device nodes with mknod: majors
195 and the nvidia-uvm major from the facts file must open with "No such device
or address" inside the container (allowed by the cgroup rule, no driver behind
them); a decoy node of another major, bind-mounted the same way, must be refused
with "Operation not permitted". This host is cgroup v1 hybrid, so the container
starts in a cgroup2-only view where lxc.cgroup2.devices.allow is enforced
(../shared/ENVIRONMENT.md).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from provisioner.render import render
from provisioner.targets.lxc import check_lxc_config
from provisioner.settings import build_settings
from provisioner.targets import Target

pytestmark = pytest.mark.infra

STATE = Path(os.environ.get("OLLAMA_PROVISIONER_STATE", "/var/tmp/ollama-provisioner"))
ROOTFS = STATE / "rootfs"
UVM_MAJOR = 240  # a "dynamic" major as discovery would report it
NODES = [("/dev/nvidia0", 195, 0), ("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", UVM_MAJOR, 0)]
DECOY = ("/dev/oprov-decoy", 196, 0)


def _run(*cmd: str, check: bool = True, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture
def lxc_container(tmp_path):
    for tool in ("lxc-start", "lxc-attach", "lxc-stop", "unshare", "rsync"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: run tests/infra/bootstrap.sh")
    if os.geteuid() != 0:
        pytest.skip("starting an LXC container needs root")
    if not (ROOTFS / "sbin/init").exists():
        pytest.fail(f"no root filesystem at {ROOTFS}: run tests/infra/bootstrap.sh")
    if any(Path(p).exists() for p, _, _ in NODES):
        pytest.skip("this host has real NVIDIA device nodes; the mknod test would shadow them")
    name = f"oprov-{uuid.uuid4().hex[:8]}"
    made: list[str] = []
    for path, major, minor in [*NODES, DECOY]:
        os.mknod(path, 0o20666, os.makedev(major, minor))
        made.append(path)
    try:
        yield name
    finally:
        _run("lxc-stop", "-n", name, "-k", check=False)
        shutil.rmtree(f"/var/lib/lxc/{name}", ignore_errors=True)
        for path in made:
            Path(path).unlink(missing_ok=True)


def _render_config(tmp_path: Path, name: str) -> str:
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "lxhost.json").write_text(json.dumps({
        "device_majors": {"nvidia-frontend": 195, "nvidia-uvm": UVM_MAJOR, "nvidia-caps": 241},
        "nvidia_device_nodes": [{"path": p, "major": ma, "minor": mi} for p, ma, mi in NODES],
        # This host's cgroup2 view has no cpu/memory controllers (they are bound to v1).
        "cgroup_controllers": [],
    }))
    s = build_settings("lxhost", Target.lxc, {"lxc_backend": "lxc", "lxc_name": name, "lxc_unprivileged": False})
    (result,) = render([s], tmp_path / "out", facts)
    return (result.directory / f"host/var/lib/lxc/{name}/config").read_text()


def _attach(name: str, script: str) -> subprocess.CompletedProcess:
    return _run("lxc-attach", "-n", name, "--", "sh", "-c", script, check=False)


def test_rendered_config_boots_and_passes_only_the_nvidia_majors(lxc_container, tmp_path):
    name = lxc_container
    config = _render_config(tmp_path, name)
    check_lxc_config(config)  # never start a config without its own root
    assert f"lxc.rootfs.path = dir:/var/lib/lxc/{name}/rootfs" in config
    container = Path("/var/lib/lxc") / name
    container.mkdir(parents=True)
    _run("rsync", "-a", f"{ROOTFS}/", f"{container}/rootfs/", timeout=300)
    # The decoy is bind-mounted like the GPU nodes but its major has no allow rule.
    (container / "config").write_text(
        config + f"lxc.mount.entry = {DECOY[0]} dev/oprov-decoy none bind,optional,create=file\n"
    )
    start = _run(
        "unshare", "-m", "--propagation", "private", "sh", "-c",
        f"umount -l /sys/fs/cgroup; mount -t cgroup2 cgroup2 /sys/fs/cgroup && lxc-start -n {name}",
        check=False,
    )
    assert start.returncode == 0, start.stderr
    state = ""
    for _ in range(60):
        state = _attach(name, "systemctl is-system-running").stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.5)
    assert state in ("running", "degraded")

    listing = _attach(name, "ls -l /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm").stdout
    assert "195,   0" in listing and "195, 255" in listing and f"{UVM_MAJOR},   0" in listing
    for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"):
        opened = _attach(name, f"head -c1 {node}")
        assert "No such device or address" in opened.stderr, (node, opened.stderr)
    decoy = _attach(name, "head -c1 /dev/oprov-decoy")
    assert "Operation not permitted" in decoy.stderr
    # The container's / is its own rootfs: the host's /var/lib/lxc/NAME is not inside it.
    assert _attach(name, f"test -e /var/lib/lxc/{name}").returncode != 0
