"""lxc: Ollama in an LXC container (Proxmox VE or plain LXC) with the NVIDIA device nodes passed in."""

from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from .. import fields
from ..errors import RenderError
from ..facts import NVIDIA_MAJOR
from .base import FileSpec, Place, TargetModule, proxy_files, service_files

if TYPE_CHECKING:
    from ..facts import HostFacts
    from ..preflight import HostPreflight
    from ..settings import HostSettings


class LxcSettings(BaseModel):
    """The container: backend, identity, size, privileges, network, passthrough style."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    lxc_backend: Literal["proxmox", "lxc"] = "proxmox"
    lxc_vmid: int | None = None
    lxc_name: str = "ollama"
    lxc_template: str | None = None
    lxc_cores: Annotated[int, Field(ge=1, le=512)] = 4
    lxc_memory_mib: Annotated[int, Field(ge=512)] = 8192
    lxc_disk_gib: Annotated[int, Field(ge=4)] = 40
    lxc_unprivileged: bool = True
    lxc_passthrough: Literal["auto", "devN", "raw"] = "auto"
    lxc_bridge: str | None = None
    lxc_path: str = "/var/lib/lxc"
    # Plain LXC: the container's root filesystem, a Debian tarball on the controller, else
    # debootstrap from the distribution's mirror (no image-server download).
    lxc_rootfs_tarball: str | None = None
    lxc_debian_mirror: str = "http://deb.debian.org/debian"
    lxc_debian_suite: str = "bookworm"
    # The NVIDIA user space inside, when Debian's packages are not the host driver's version:
    # NVIDIA-Linux-x86_64-<version>.run by URL or controller path, and its sha256.
    lxc_nvidia_installer: str | None = None
    lxc_nvidia_installer_sha256: str | None = None

    @field_validator("lxc_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return fields.hostname(v)

    @field_validator("lxc_vmid")
    @classmethod
    def _vmid(cls, v: int | None) -> int | None:
        if v is not None and not 100 <= v <= 999_999_999:
            raise ValueError("Proxmox VMIDs are integers from 100 to 999999999")
        return v

    @field_validator("lxc_path")
    @classmethod
    def _abs(cls, v: str) -> str:
        return fields.abs_path(v)

    @field_validator("lxc_rootfs_tarball")
    @classmethod
    def _tarball(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not re.search(r"\.tar(\.(gz|xz|zst|bz2))?$|\.tgz$", v):
            raise ValueError("must be a tar archive of a root filesystem (.tar, .tar.gz, .tar.xz, .tar.zst)")
        return fields.abs_path(v)

    @field_validator("lxc_debian_mirror")
    @classmethod
    def _mirror(cls, v: str) -> str:
        if not re.match(r"^(https?|file)://", v):
            raise ValueError("must be an http(s):// or file:// URL of a Debian mirror")
        return v.rstrip("/")

    @field_validator("lxc_nvidia_installer")
    @classmethod
    def _installer(cls, v: str | None) -> str | None:
        if v is None or v.startswith("/") or re.match(r"^https?://", v):
            return v
        raise ValueError("must be an http(s):// URL or an absolute path on the controller of NVIDIA-Linux-x86_64-<version>.run")

    @field_validator("lxc_nvidia_installer_sha256")
    @classmethod
    def _installer_sha(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower().removeprefix("sha256:")
        if not re.fullmatch(r"[0-9a-f]{64}", v):
            raise ValueError("must be 64 hexadecimal digits (optionally prefixed 'sha256:')")
        return v

    @field_validator("lxc_debian_suite")
    @classmethod
    def _suite(cls, v: str) -> str:
        if not re.match(r"^[a-z]+$", v):
            raise ValueError("must be a Debian suite name like bookworm or trixie")
        return v

    @property
    def is_proxmox(self) -> bool:
        return self.lxc_backend == "proxmox"

    @property
    def lxc_config_path(self) -> str:
        return f"{self.lxc_path}/{self.lxc_name}/config"

    @property
    def lxc_rootfs_path(self) -> str:
        return f"{self.lxc_path}/{self.lxc_name}/rootfs"

    @property
    def lxc_bridge_name(self) -> str:
        return self.lxc_bridge or ("vmbr0" if self.is_proxmox else "lxcbr0")

    @property
    def lxc_template_name(self) -> str:
        """The Proxmox template volume the container is created from."""
        return self.lxc_template or "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"


class ProxmoxSettings(BaseModel):
    """The Proxmox VE part of the LXC concern: where its API answers and with which token."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    lxc_proxmox_api_host: str | None = None
    lxc_proxmox_api_port: Annotated[int, Field(ge=1, le=65535)] = 8006
    lxc_proxmox_api_user: str = "root@pam"
    lxc_proxmox_api_token_id: str | None = None
    lxc_proxmox_api_token_secret: SecretStr | None = None
    # root@pam's password: a login ticket, the only credential the API lets set devN entries.
    lxc_proxmox_api_password: SecretStr | None = None
    lxc_proxmox_validate_certs: bool = True
    # The CA that signed the node's certificate (its /etc/pve/pve-root-ca.pem), on the controller.
    lxc_proxmox_ca_cert: str | None = None
    lxc_proxmox_node: str | None = None
    lxc_proxmox_storage: str = "local-lvm"

    @field_validator("lxc_proxmox_ca_cert")
    @classmethod
    def _ca(cls, v: str | None) -> str | None:
        return v if v is None else fields.abs_path(v)

    @field_validator("lxc_proxmox_api_token_id")
    @classmethod
    def _token_id(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(r"[^\s@!]+@[^\s@!]+![A-Za-z][A-Za-z0-9._-]*", v):
            raise ValueError("must be USER@REALM!TOKENID, for example ollama@pve!provisioner")
        return v


# The credential may come from the environment instead of the inventory (names as proxmoxer's
# and community.proxmox's modules read them).
TOKEN_ENV = ("PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET")
PASSWORD_ENV = "PROXMOX_PASSWORD"


def _credential(settings: HostSettings) -> bool:
    if settings.lxc_proxmox_api_password is not None or os.environ.get(PASSWORD_ENV):
        return True
    token = settings.lxc_proxmox_api_token_id or os.environ.get(TOKEN_ENV[0])
    secret = settings.lxc_proxmox_api_token_secret or os.environ.get(TOKEN_ENV[1])
    return bool(token and secret)


# --- values the templates derive from settings and facts -----------------------------------------


def passthrough_style(settings: HostSettings, facts: HostFacts) -> str:
    """devN entries on Proxmox VE >= 8.1, raw lxc.* lines otherwise."""
    if settings.lxc_passthrough != "auto":
        return settings.lxc_passthrough
    if not settings.is_proxmox:
        return "raw"
    version = facts.proxmox_version or "0"
    parts = [int(p) for p in re.findall(r"\d+", version)[:2]] + [0, 0]
    return "devN" if tuple(parts[:2]) >= (8, 1) else "raw"


def gpu_majors(facts: HostFacts) -> list[int]:
    """The character-device majors of every NVIDIA node, 195 first, from the host's facts."""
    majors = {NVIDIA_MAJOR}
    majors.update(n.major for n in facts.nvidia_device_nodes)
    for name in ("nvidia-uvm", "nvidia-caps"):
        if name in facts.device_majors:
            majors.add(facts.device_majors[name])
    return sorted(majors, key=lambda m: (m != NVIDIA_MAJOR, m))


def gpu_mounts(facts: HostFacts) -> list[tuple[str, str]]:
    """(host path, kind) for bind mounts: every top-level node, and /dev/nvidia-caps as a directory."""
    mounts: list[tuple[str, str]] = []
    caps = False
    for node in facts.nvidia_device_nodes:
        if node.path.startswith("/dev/nvidia-caps/"):
            caps = True
        else:
            mounts.append((node.path, "file"))
    if caps:
        mounts.append(("/dev/nvidia-caps", "dir"))
    return mounts


_ROOTFS_RE = re.compile(r"^\s*lxc\.rootfs\.path\s*=\s*(?:dir:)?(\S+)\s*$", re.MULTILINE)
CONFIG_TEMPLATE = "lxc/config.j2"


def check_lxc_config(text: str, source: str = "LXC config") -> None:
    """Refuse an LXC config without a container root: LXC would boot the host's own /."""
    m = _ROOTFS_RE.search(text)
    if not m or m.group(1) in ("/", ""):
        raise RenderError(
            f"{source} has no lxc.rootfs.path of its own; LXC would boot the host's / as the "
            "container. Refusing to write it."
        )


class LxcTarget(TargetModule):
    name = "lxc"
    description = "Ollama in an LXC container (Proxmox VE or plain LXC) with the NVIDIA nodes passed in"
    apply_ready = True
    settings_models = (LxcSettings, ProxmoxSettings)
    # The Proxmox node's name: lxc_proxmox_node, else the inventory host's name up to the first dot.
    derived = {"proxmox_node": lambda s: s.lxc_proxmox_node or s.host.split(".")[0]}
    facts_used = ("all", "driver", "devices", "gids", "proxmox", "cgroup")
    service_scope = "guest"
    files = (
        FileSpec(CONFIG_TEMPLATE, "host", "{lxc_config_path}", when="is_plain_lxc"),
        FileSpec("lxc/proxmox-api.json.j2", "host", "api:/nodes/{proxmox_node}/lxc",
                 method="api", out="proxmox/lxc-{lxc_vmid}.json", when="is_proxmox"),
        FileSpec("lxc/proxmox-raw.conf.j2", "host", "/etc/pve/lxc/{lxc_vmid}.conf",
                 method="append", out="etc/pve/lxc/{lxc_vmid}.conf.append", when="proxmox_raw"),
        *service_files("guest"),
        # The proxy (when exposed) runs inside the container next to the service: the container's own
        # address (on lxc_bridge) is where the LAN reaches it.
        *proxy_files("guest"),
    )
    fixes = {
        "no-device-node": "pass the nodes in: devN entries (Proxmox VE >= 8.1) or lxc.mount.entry plus "
                          "lxc.cgroup2.devices.allow lines, then restart the container; `provision --target lxc` "
                          "renders them",
        "nvidia-uvm-missing": "make the nodes at every host boot (`nvidia-modprobe -u -c=0` in a oneshot unit, which "
                              "`provision --target lxc` installs) and pass /dev/nvidia-uvm and /dev/nvidia-uvm-tools "
                              "in with a cgroup rule for their major (`grep nvidia-uvm /proc/devices`), then restart "
                              "the container",
        "device-denied": "add `lxc.cgroup2.devices.allow = c MAJOR:* rwm` for every NVIDIA major on the host (`grep "
                         "nvidia /proc/devices`), or devN entries on Proxmox VE >= 8.1, then restart the container; "
                         "`provision --target lxc` renders them from the host's facts",
        "majors-differ": "render the container's rules and mounts from the host's discovered facts (`provision --target "
                         "lxc` reads /proc/devices on every run), remove nodes made with mknod inside the container, "
                         "then restart it",
        "nvidia-smi-missing": "install the NVIDIA user-space driver of exactly the host's version ({host_driver}) in "
                              "the container, without the kernel module "
                              "(`NVIDIA-Linux-x86_64-<version>.run --no-kernel-module`)",
        "driver-mismatch": "install the user-space driver of exactly {host_driver} in the container",
    }

    def check_settings(self, settings: HostSettings) -> list[str]:
        problems = []
        if settings.is_proxmox and settings.lxc_vmid is None:
            problems.append("lxc_vmid is required when lxc_backend is 'proxmox'; set lxc_vmid: 100 or higher")
        if not settings.is_proxmox and settings.lxc_passthrough == "devN":
            problems.append("lxc_passthrough='devN' exists only on Proxmox VE >= 8.1; use 'raw' or 'auto' "
                            "with lxc_backend: lxc")
        if (settings.lxc_nvidia_installer is None) != (settings.lxc_nvidia_installer_sha256 is None):
            problems.append("lxc_nvidia_installer and lxc_nvidia_installer_sha256 go together; set both or neither")
        if (settings.lxc_proxmox_api_token_id is None) != (settings.lxc_proxmox_api_token_secret is None):
            problems.append("lxc_proxmox_api_token_id and lxc_proxmox_api_token_secret go together; "
                            "set both or neither")
        return problems

    def context(self, settings: HostSettings, facts: HostFacts) -> dict[str, Any]:
        return {
            "passthrough_style": passthrough_style(settings, facts),
            "gpu_majors": gpu_majors(facts),
            "gpu_mounts": gpu_mounts(facts),
            "gpu_nodes": facts.nvidia_device_nodes,
            "video_gid": facts.group_gids.get("video", 44),
        }

    def conditions(self, settings: HostSettings, facts: HostFacts) -> dict[str, bool]:
        return {
            "is_plain_lxc": not settings.is_proxmox,
            "is_proxmox": settings.is_proxmox,
            "proxmox_raw": settings.is_proxmox and passthrough_style(settings, facts) == "raw",
        }

    def check_rendered(self, spec: FileSpec, text: str, where: str) -> None:
        if spec.template == CONFIG_TEMPLATE:
            check_lxc_config(text, where)

    def render_notes(self, settings: HostSettings, facts: HostFacts, texts: Mapping[str, str]) -> list[str]:
        return [f"LXC GPU passthrough style: {passthrough_style(settings, facts)}"]

    def fact_topics(self, settings: HostSettings, facts: HostFacts) -> set[str]:
        used = set(self.facts_used)
        if not settings.is_proxmox:
            return used - {"proxmox", "gids"}
        return used - {"cgroup"} if passthrough_style(settings, facts) == "devN" else used

    status = "apply ready (plain LXC, and Proxmox VE through its API)"

    def preflight(self, settings: HostSettings, facts: HostFacts) -> HostPreflight:
        result = super().preflight(settings, facts)
        # Rendering needs no credential (the files are for review); applying does.
        if settings.is_proxmox and not _credential(settings):
            result.problems.append(
                f"{settings.host}: lxc_backend 'proxmox' needs a Proxmox VE credential: set lxc_proxmox_api_token_id "
                "and lxc_proxmox_api_token_secret (vault the secret), or PROXMOX_TOKEN_ID and PROXMOX_TOKEN_SECRET in "
                "the environment, or lxc_proxmox_api_password for root@pam")
        if result.cpu_only:
            result.notes.append(f"{settings.host}: no NVIDIA user space is installed in the container "
                                "(the host has no NVIDIA GPU)")
        elif result.driver_version:
            result.notes.append(f"{settings.host}: the container gets the NVIDIA user space of exactly the host's "
                                f"driver {result.driver_version} (no kernel module)")
        return result

    def uninstall_vars(self, purge: bool, destroy: bool = False, revert_host: bool = False) -> dict[str, Any]:
        return {**super().uninstall_vars(purge, destroy, revert_host), "lxc_container_destroy": destroy}

    def uninstall_kept(self, purge: bool, destroy: bool = False, revert_host: bool = False) -> str:
        if destroy:
            return "the container and everything in it, models included, were destroyed"
        return super().uninstall_kept(purge, destroy) + "; the container was kept (--destroy removes it)"

    def host_vars(self, settings: HostSettings, checked: HostPreflight | None) -> dict[str, Any]:
        gpu = bool(checked and not checked.cpu_only)
        backend: dict[str, Any] = {"lxc_backend": settings.lxc_backend}
        if settings.is_proxmox:
            # The secret and the password are not here: the role reads them from the inventory or
            # the environment, so they never land in a file.
            backend.update({
                "pve_container_api_host": settings.lxc_proxmox_api_host or settings.address or settings.host,
                "pve_container_api_port": settings.lxc_proxmox_api_port,
                "pve_container_api_user": settings.lxc_proxmox_api_user,
                "pve_container_api_token_id": settings.lxc_proxmox_api_token_id or "",
                "pve_container_validate_certs": settings.lxc_proxmox_validate_certs,
                "pve_container_ca_cert": settings.lxc_proxmox_ca_cert or "",
                "pve_container_node": settings.proxmox_node,
                "pve_container_vmid": settings.lxc_vmid,
                "pve_container_params_file": f"host/proxmox/lxc-{settings.lxc_vmid}.json",
                "pve_container_raw_file": f"host/etc/pve/lxc/{settings.lxc_vmid}.conf.append",
                "pve_container_gpu": gpu,
            })
        return {
            **super().host_vars(settings, checked),
            **backend,
            "lxc_gpu_enabled": gpu,
            "nvidia_userspace_version": (checked.driver_version or "") if checked and not checked.cpu_only else "",
            "nvidia_userspace_installer": settings.lxc_nvidia_installer or "",
            "nvidia_userspace_installer_sha256": settings.lxc_nvidia_installer_sha256 or "",
            "lxc_container_name": settings.lxc_name,
            "lxc_container_path": settings.lxc_path,
            "lxc_container_unprivileged": settings.lxc_unprivileged,
            "lxc_container_rootfs_tarball": settings.lxc_rootfs_tarball or "",
            "lxc_container_debian_mirror": settings.lxc_debian_mirror,
            "lxc_container_debian_suite": settings.lxc_debian_suite,
        }

    def place(self, settings: HostSettings) -> Place:
        if settings.is_proxmox:
            # `pct exec` on the node, over SSH with the node's own connection (community.proxmox's
            # proxmox_pct_remote, paramiko): the container needs no address the controller can
            # reach, nor an SSH server. Modules go through files (the plugin gives module runs a
            # pty, which does not pass a pipelined module's stdin reliably).
            return Place(name=f"{settings.host}/ct-{settings.lxc_vmid}",
                         description=f"CT {settings.lxc_vmid} ({settings.lxc_name}) on {settings.host}",
                         connection={"ansible_connection": "community.proxmox.proxmox_pct_remote",
                                     "proxmox_vmid": settings.lxc_vmid, "via_host": True,
                                     "ansible_python_interpreter": "/usr/bin/python3",
                                     "ansible_pipelining": False})
        name = settings.lxc_name
        # The container's own name in the run's inventory: unique per inventory host. The LXC
        # connection runs on the controller, which is then the LXC host: lxc_pipelined
        # (playbooks/connection_plugins/) is community.general.lxc with a stdin a pipelined module
        # can be read from (the stock plugin's is non-blocking and never closed: "Broken pipe"),
        # so a module is one attach instead of a temporary directory, a copy and a clean-up.
        return Place(name=f"{settings.host}/ct-{settings.lxc_name}", description=f"container {name} on {settings.host}",
                     connection={"ansible_connection": "lxc_pipelined", "ansible_host": settings.lxc_name,
                                 "ansible_python_interpreter": "/usr/bin/python3", "ansible_pipelining": True})


TARGET = LxcTarget()
