"""The lxc target end to end on real components, plain LXC backend: the project creates an
unprivileged container on this machine from a Debian root filesystem tarball, starts it on lxcbr0,
installs the real Ollama server inside through the shared service play (Ansible's LXC
connection) and verifies inside the container. No GPU here: 100% CPU is the expected verdict.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml

from tests.native_host import LXC_HOST_IP, MODEL_FILE, VERSION_A, www_server
from tests.real_ollama import STATE

pytestmark = [pytest.mark.infra, pytest.mark.slow]

TARBALL = STATE / "rootfs.tar"
MODELS = "/usr/share/ollama/.ollama/models"


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=120, stdin=subprocess.DEVNULL)


def inside(name: str, command: str) -> str:
    return _run("lxc-attach", "-n", name, "--", "sh", "-c", command, check=False).stdout.strip()


@pytest.fixture(scope="module")
def www():
    with www_server(LXC_HOST_IP) as url:
        yield url


@pytest.fixture
def name():
    for tool in ("lxc-start", "lxc-attach", "lxc-destroy"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} missing: run tests/infra/bootstrap.sh")
    if not TARBALL.is_file():
        pytest.fail(f"no root filesystem tarball {TARBALL}: run tests/infra/bootstrap.sh")
    name = f"oprov-{uuid.uuid4().hex[:8]}"
    try:
        yield name
    finally:
        _run("lxc-stop", "-n", name, "-k", check=False)
        _run("lxc-destroy", "-n", name, check=False)
        shutil.rmtree(f"/var/lib/lxc/{name}", ignore_errors=True)


def write_lxc_inventory(directory: Path, name: str, www: str, **variables) -> Path:
    """An inventory whose lxc group is this machine, carrying a plain-LXC container ``name``."""
    host = {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"}
    settings = {
        "lxc_backend": "lxc",
        "lxc_name": name,
        "lxc_rootfs_tarball": str(TARBALL),
        "ollama_version": VERSION_A,
        "ollama_archive": f"{www}/ollama-linux-amd64.tgz",
        "ollama_models": [{"name": "smollm2", "from": f"{www}/{MODEL_FILE}"}],
        **variables,
    }
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"all": {"children": {"lxc": {"hosts": {"lxchost": {**host, **settings}}}}}}
    (directory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def test_plain_lxc_container_created_ollama_inside_verified_rerun_changes_nothing_uninstall_keeps_models(
        name, www, tmp_path, provision):
    inv = write_lxc_inventory(tmp_path / "inv", name, www, ollama_context_length=2048)
    first = provision("--target", "lxc", "-i", inv)
    assert first.exit_code == 0, first.output
    assert f"on container {name} on lxchost" in first.output
    assert "lxchost: smollm2:latest: 100% CPU" in first.output

    # Unprivileged, id-mapped, marked as ours, with an address on lxcbr0 and Ollama running inside.
    config = Path(f"/var/lib/lxc/{name}/config").read_text()
    assert "Managed by ollama-provisioner" in config and "lxc.idmap = u 0 100000 65536" in config
    assert inside(name, "cat /proc/self/uid_map").split() == ["0", "100000", "65536"]
    assert _run("lxc-info", "-n", name, "-iH").stdout.startswith("10.0.3.")
    assert inside(name, "systemctl is-active ollama") == "active"
    assert json.loads(inside(name, "curl -sf http://127.0.0.1:11434/api/version"))["version"] == VERSION_A
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=2048"' in inside(
        name, "cat /etc/systemd/system/ollama.service.d/override.conf")

    again = provision("--target", "lxc", "-i", inv)
    assert again.exit_code == 0, again.output
    assert "changed 0 thing(s) on lxchost" in again.output

    # A changed server setting rewrites the drop-in and restarts Ollama, not the container.
    booted = inside(name, "cat /proc/1/stat | cut -d' ' -f22")
    write_lxc_inventory(tmp_path / "inv", name, www, ollama_context_length=4096)
    changed = provision("--target", "lxc", "-i", inv)
    assert changed.exit_code == 0, changed.output
    assert "Install the rendered drop-in with the server's settings" in changed.output
    assert "Restart Ollama on the new version or settings" in changed.output
    assert "Start the container" not in changed.output and "Stop the container" not in changed.output
    assert inside(name, "cat /proc/1/stat | cut -d' ' -f22") == booted
    assert 'Environment="OLLAMA_CONTEXT_LENGTH=4096"' in inside(
        name, "cat /etc/systemd/system/ollama.service.d/override.conf")

    blobs = inside(name, f"ls {MODELS}/blobs")
    removed = provision("uninstall", "--target", "lxc", "-i", inv)
    assert removed.exit_code == 0, removed.output
    assert "the container was kept" in removed.output
    assert inside(name, "systemctl is-active ollama") != "active"
    assert inside(name, f"ls {MODELS}/blobs") == blobs and blobs


def test_a_container_of_the_same_name_not_made_by_the_project_is_left_alone(name, www, tmp_path, provision):
    foreign = Path(f"/var/lib/lxc/{name}")
    foreign.mkdir(parents=True)
    (foreign / "config").write_text(f"lxc.uts.name = {name}\nlxc.rootfs.path = dir:/srv/{name}\n")
    before = sorted(p.name for p in foreign.iterdir())
    inv = write_lxc_inventory(tmp_path / "inv", name, www)
    result = provision("--target", "lxc", "-i", inv)
    assert result.exit_code == 4, result.output
    assert f"LXC container {name} on lxchost was not created by ollama-provisioner" in result.output
    assert "changes made before the failure: nothing was changed" in result.output
    assert sorted(p.name for p in foreign.iterdir()) == before
    assert (foreign / "config").read_text().startswith(f"lxc.uts.name = {name}\n")


# --- device rules from the host's facts, enforced ------------------------------------------
# This host is cgroup v1, where lxc.cgroup2.devices.allow is not enforced; as on a cgroup2 host
# it is when the container starts in a cgroup2-only view (../shared/ENVIRONMENT.md). That view
# is a fixture of this test host, given as the role's start command; the product never writes it.
CGROUP2_VIEW = ("unshare -m --propagation private sh -c 'umount -l /sys/fs/cgroup; "
                "mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec lxc-start \"$@\"' lxc-start")
UVM_MAJOR = 240  # a dynamic major as /proc/devices would give it
NODES = [("/dev/nvidia0", 195, 0), ("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", UVM_MAJOR, 0)]
DECOY = ("/dev/oprov-decoy", 196, 0)


@pytest.fixture
def gpu_nodes():
    """/dev/nvidia* nodes made with mknod: real majors, no driver behind them (opening gives ENXIO)."""
    import os

    if any(Path(p).exists() for p, _, _ in NODES):
        pytest.skip("this host has real NVIDIA device nodes; the mknod test would shadow them")
    for path, major, minor in [*NODES, DECOY]:
        os.mknod(path, 0o20666, os.makedev(major, minor))
    try:
        yield
    finally:
        for path, _, _ in [*NODES, DECOY]:
            Path(path).unlink(missing_ok=True)


def test_the_rendered_device_rules_use_the_hosts_majors_and_are_enforced(name, www, tmp_path, provision, gpu_nodes):
    inv = write_lxc_inventory(tmp_path / "inv", name, www, lxc_container_start_command=CGROUP2_VIEW)
    facts = tmp_path / "facts"
    assert provision("discover", "-t", "lxc", "-i", inv, "--facts", facts).exit_code == 0
    found = json.loads((facts / "lxchost.json").read_text())
    assert {(n["path"], n["major"]) for n in found["nvidia_device_nodes"]} == {(p, ma) for p, ma, _ in NODES}
    # The test host's fixture, as facts: containers run in a cgroup2 view without cpu/memory
    # controllers, and the uvm module (not loaded here) has the major of its node.
    found.update(cgroup_version=2, cgroup_controllers=[], device_majors={"nvidia-uvm": UVM_MAJOR, "nvidia-caps": 241})
    (facts / "lxchost.json").write_text(json.dumps(found))

    result = provision("--target", "lxc", "-i", inv, "--facts", facts)
    assert result.exit_code == 0, result.output
    config = Path(f"/var/lib/lxc/{name}/config").read_text()
    for major in (195, UVM_MAJOR, 241):
        assert f"lxc.cgroup2.devices.allow = c {major}:* rwm" in config
    assert "lxc.mount.entry = /dev/nvidia-uvm dev/nvidia-uvm none bind,optional,create=file" in config
    listing = inside(name, "ls -l /dev/nvidia0 /dev/nvidiactl /dev/nvidia-uvm")
    assert "195,   0" in listing and "195, 255" in listing and f"{UVM_MAJOR},   0" in listing
    for node in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/nvidia-uvm"):
        opened = _run("lxc-attach", "-n", name, "--", "head", "-c1", node, check=False)
        assert "No such device or address" in opened.stderr, (node, opened.stderr)

    # A node of another major, bind-mounted the same way, is refused: the rules are enforced.
    with open(f"/var/lib/lxc/{name}/config", "a") as f:
        f.write(f"lxc.mount.entry = {DECOY[0]} dev/oprov-decoy none bind,optional,create=file\n")
    _run("lxc-stop", "-n", name, "-t", "10")
    _run("sh", "-c", f"{CGROUP2_VIEW} -n {name}")
    decoy = _run("lxc-attach", "-n", name, "--", "head", "-c1", "/dev/oprov-decoy", check=False)
    assert "Operation not permitted" in decoy.stderr, decoy.stderr


def test_a_host_without_lxc_is_refused_before_anything_changes(tmp_path):
    """Role lxc_container on a real systemd host that has no LXC installed."""
    from provisioner.errors import ApplyError
    from provisioner.progress import Quiet
    from provisioner.runner import AnsibleRunner
    from provisioner.workspace import Workspace
    from tests.native_host import sh, systemd_container

    with systemd_container("op-nolxc") as host:
        (tmp_path / "inv.yml").write_text(
            f"all:\n  hosts:\n    {host}:\n      ansible_connection: community.docker.docker\n"
            f"      ansible_python_interpreter: /usr/bin/python3\n")
        (tmp_path / "play.yml").write_text(
            "- hosts: all\n  gather_facts: false\n  roles:\n    - role: lxc_container\n"
            "      lxc_container_config_src: /nonexistent\n")
        before = sh(host, "ls -A /var/lib")
        with pytest.raises(ApplyError) as err:
            AnsibleRunner(Workspace(tmp_path / "state"), tmp_path / "inv.yml", Quiet()).run(str(tmp_path / "play.yml"))
        assert f"LXC is not installed on {host} (no lxc-info): install it (apt-get install lxc)" in err.value.message
        assert "nothing was changed" in err.value.details[0]
        assert sh(host, "ls -A /var/lib") == before


def test_a_container_that_gets_no_address_says_what_was_seen(name, www, tmp_path, provision):
    """A bridge with no DHCP server behind it: the wait ends with what lxc-info showed."""
    bridge = f"opbr{name[-6:]}"
    _run("ip", "link", "add", bridge, "type", "bridge")
    _run("ip", "link", "set", bridge, "up")
    try:
        inv = write_lxc_inventory(tmp_path / "inv", name, www, lxc_bridge=bridge, lxc_container_start_timeout=12)
        result = provision("--target", "lxc", "-i", inv)
        assert result.exit_code == 4, result.output
        assert f"container {name} on lxchost got no IPv4 address within 6s (lxc-info -iH showed: '')" in result.output
        assert "is a DHCP server answering on its bridge" in result.output
    finally:
        _run("ip", "link", "del", bridge, check=False)


def test_a_remote_plain_lxc_host_is_refused_before_anything_changes(tmp_path, provision):
    """Ansible's LXC connection runs where the controller runs: a host reached over SSH is refused."""
    inv = tmp_path / "inv"
    inv.mkdir()
    (inv / "hosts.yml").write_text("all:\n  children:\n    lxc:\n      hosts:\n        lxc-far:\n"
                                   "          ansible_host: 192.0.2.7\n          lxc_backend: lxc\n")
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "lxc-far.json").write_text("{}")
    result = provision("--target", "lxc", "-i", inv, "--facts", facts)
    assert result.exit_code == 4, result.output
    assert "plain LXC (lxc_backend: lxc) is applied from the LXC host itself: lxc-far is reached with " \
           "connection 'ssh'" in result.output
    assert "changes made before the failure: nothing was changed" in result.output
