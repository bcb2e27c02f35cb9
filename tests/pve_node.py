"""A Proxmox VE node's shell side, STAND-IN for tests only: a Docker container reached over real SSH.

What it is: Debian with systemd as PID 1 and OpenSSH (tests/pve_node/Dockerfile, built
from local/debian-systemd:bookworm as local/pve-node-standin:bookworm), whose /etc/pve
is a bind mount of the test's config_dir, the directory that the API double
(tests/pve_double.py, PVEDouble(config_dir=...)) keeps its containers' config files
in.  So the two sides share one ``nodes/<node>/lxc/<vmid>.conf`` the way pmxcfs makes
the API and ``pct`` share it on a real node (with ``/etc/pve/lxc`` a symlink to
``nodes/<node>/lxc``).  On it: the stand-in ``pct`` (set/config/status/exec/list/
start/stop, running the double's own handlers over those files) and ``pveversion``
(the version given here).  Built from: the project's systemd containers
(tests/native_host.py), pve-container's pct.pm and Config.pm, pve-cluster's layout
of /etc/pve, and the community.proxmox.proxmox_pct_remote connection plugin (which
SSHes to the node and runs ``/usr/sbin/pct exec VMID -- <command>``).

What it cannot prove:
- that a real Proxmox VE node (pmxcfs, pct, lxc) accepts or answers the same: pct's
  texts are representative where its docstring says so;
- anything about a container: ``pct exec`` runs the command on this node stand-in
  itself, with no container runtime: no isolation, no id mapping, no device cgroup,
  no devN or raw lxc.* line takes effect, and "running" is only the double's state
  file; devN paths are not checked against devices;
- SSH hardening, users other than root, sudo (proxmox_become_method).

Usage::

    with PVEDouble(config_dir=tmp_path / "etc-pve") as pve, \\
            pve_node(config_dir=tmp_path / "etc-pve") as node:
        node.exec("pct", "config", "120")
        inventory_host_vars = {**node.inventory_vars(), "proxmox_vmid": 120,
                               "ansible_connection": "community.proxmox.proxmox_pct_remote"}
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

TESTS = Path(__file__).resolve().parent
BASE_IMAGE = "local/debian-systemd:bookworm"
IMAGE = "local/pve-node-standin:bookworm"
HASH_LABEL = "ollama-provisioner.pve-node-standin.hash"
# What the image is built from, relative to tests/ (the build context).
IMAGE_FILES = ("pve_node/Dockerfile", "pve_node/pct", "pve_node/pveversion", "pve_conf.py", "pve_double.py")

# Real pve-manager repoids and the kernels they shipped with, where known; others made up.
_KNOWN_VERSIONS = {"8.2.4": ("faa83925c9641325", "6.8.12-1-pve")}
# The kernel series of each release (8.0: 6.2, 8.1: 6.5, 8.2+: 6.8, 9: 6.14); the exact
# package revisions are representative.
_KERNELS = {"7": "5.15.158-2-pve", "8.0": "6.2.16-20-pve", "8.1": "6.5.13-6-pve", "8": "6.8.12-1-pve",
            "9": "6.14.8-2-pve"}


def _version_facts(version: str) -> tuple[str, str]:
    """(repoid, running kernel) for a pve-manager version."""
    if version in _KNOWN_VERSIONS:
        return _KNOWN_VERSIONS[version]
    major_minor = ".".join(version.split(".")[:2])
    kernel = _KERNELS.get(major_minor) or _KERNELS.get(version.split(".")[0], "6.8.12-1-pve")
    return hashlib.sha1(version.encode()).hexdigest()[:16], kernel


def image_hash() -> str:
    digest = hashlib.sha256()
    for rel in IMAGE_FILES:
        digest.update(rel.encode() + b"\0" + (TESTS / rel).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def ensure_image() -> str:
    """Build the image unless one with the current hash label exists; return its tag."""
    want = image_hash()
    have = subprocess.run(["docker", "image", "inspect", "-f", f'{{{{index .Config.Labels "{HASH_LABEL}"}}}}',
                           IMAGE], capture_output=True, text=True)
    if have.returncode == 0 and have.stdout.strip() == want:
        return IMAGE
    if subprocess.run(["docker", "image", "inspect", BASE_IMAGE], capture_output=True).returncode != 0:
        raise RuntimeError(f"{BASE_IMAGE} is missing: run bash tests/infra/systemd-image.sh")
    with tempfile.TemporaryDirectory(prefix="pve-node-ctx-") as ctx:
        for rel in IMAGE_FILES:  # just these files as the context (not the whole tests/ tree)
            (Path(ctx) / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(TESTS / rel, Path(ctx) / rel)
        build = subprocess.run(["docker", "build", "-q", "-f", f"{ctx}/pve_node/Dockerfile", "--label",
                                f"{HASH_LABEL}={want}", "-t", IMAGE, ctx], capture_output=True, text=True)
    if build.returncode != 0:
        raise RuntimeError(f"docker build of {IMAGE} failed:\n{build.stdout}{build.stderr}")
    return IMAGE


@dataclass
class PveNode:
    name: str  # the Docker container's name
    node: str  # the PVE node name (the container's hostname)
    ip: str
    ssh_key: Path  # private key authorised for root
    config_dir: Path  # what the node sees as /etc/pve
    pve_version: str

    def inventory_vars(self) -> dict:
        """Ansible host vars that reach the node over real SSH as root, by the ssh
        connection or by community.proxmox.proxmox_pct_remote (paramiko: it needs
        ansible_host_key_checking false; add proxmox_vmid and ansible_connection)."""
        return {
            "ansible_host": self.ip,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(self.ssh_key),
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_host_key_checking": False,
        }

    def conf(self, vmid: int | str) -> str:
        """/etc/pve/lxc/<vmid>.conf as the node has it (the shared file)."""
        return (self.config_dir / "nodes" / self.node / "lxc" / f"{vmid}.conf").read_text(encoding="utf-8")

    def exec(self, *cmd: str, input: str | None = None) -> subprocess.CompletedProcess:
        """docker exec on the node (not SSH): text output, no check."""
        return subprocess.run(["docker", "exec", "-i", self.name, *cmd], input=input, capture_output=True,
                              text=True, timeout=120)

    def ssh(self, command: str, input: str | None = None) -> subprocess.CompletedProcess:
        """One command over real SSH as root (the OpenSSH client), like the product's
        ssh connection: the node's login shell runs the command string."""
        return subprocess.run(["ssh", "-i", str(self.ssh_key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                               "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10",
                               f"root@{self.ip}", command], input=input, capture_output=True, text=True, timeout=120)


def _docker(*args: str, check: bool = True, input: str | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(["docker", *args], capture_output=True, text=True, input=input)
    if check and proc.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args[:3])} ... failed: {proc.stderr.strip()}")
    return proc


def _wait_for_ssh(ip: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((ip, 22), timeout=2) as sock:
                if sock.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no sshd answered on {ip}:22")


@contextmanager
def pve_node(*, node: str = "pve", pve_version: str = "8.2.4", config_dir: Path,
             kernel: str | None = None) -> Iterator[PveNode]:
    """A node stand-in whose /etc/pve is config_dir (made if missing, with the
    nodes/<node>/lxc directory and PVE's lxc and local symlinks), hostname node and
    `pveversion` answering pve_version (kernel: its "running kernel"), root reachable
    by a fresh ed25519 key.  Removed at exit."""
    config_dir = Path(config_dir).resolve()
    (config_dir / "nodes" / node / "lxc").mkdir(parents=True, exist_ok=True)
    for link, target in (("lxc", f"nodes/{node}/lxc"), ("local", f"nodes/{node}")):
        if not (config_dir / link).is_symlink():
            (config_dir / link).symlink_to(target)
    image = ensure_image()
    name = f"pve-node-{node}-{uuid.uuid4().hex[:8]}"
    keydir = Path(tempfile.mkdtemp(prefix="pve-node-key-"))
    key = keydir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tests@{name}", "-f", str(key)],
                   check=True, capture_output=True)
    repoid, default_kernel = _version_facts(pve_version)
    try:
        _docker("run", "-d", "--name", name, "--hostname", node, "--cgroupns=private", "--cap-add", "SYS_ADMIN",
                "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", f"{config_dir}:/etc/pve", image)
        version_env = f"PVE_MANAGER_VERSION={pve_version}\nPVE_REPOID={repoid}\nPVE_KERNEL={kernel or default_kernel}\n"
        _docker("exec", "-i", name, "sh", "-c", "cat > /etc/pve-standin/version.env", input=version_env)
        _docker("exec", "-i", name, "sh", "-c",
                "umask 077 && mkdir -p /root/.ssh && cat > /root/.ssh/authorized_keys",
                input=(keydir / "id_ed25519.pub").read_text())
        ip = _docker("inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", name).stdout.strip()
        _wait_for_ssh(ip, time.monotonic() + 90)
        yield PveNode(name, node, ip, key, config_dir, pve_version)
    finally:
        # what the node's root wrote must stay removable by the test's user
        _docker("exec", name, "chown", "-R", f"{os.getuid()}:{os.getgid()}", "/etc/pve", check=False)
        _docker("rm", "-f", name, check=False)
        shutil.rmtree(keydir, ignore_errors=True)
