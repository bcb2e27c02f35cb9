"""Targets are data: one row per deployment topology.

Adding a target is adding a row: the playbook it runs, the templates it renders
and the inventory group whose members carry it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
TEMPLATES_DIR = PROJECT_ROOT / "templates"
PLAYBOOKS_DIR = PROJECT_ROOT / "playbooks"
ROLES_DIR = PROJECT_ROOT / "roles"


class Target(str, Enum):
    native = "native"
    docker = "docker"
    lxc = "lxc"
    kvm = "kvm"

    def __str__(self) -> str:  # typer shows the value, not "Target.native"
        return self.value


@dataclass(frozen=True)
class FileSpec:
    """One rendered file: its template, where it lands, who reads it.

    ``scope`` is ``host`` for the machine in the inventory and ``guest`` for the
    container or VM it carries. ``method`` says how the apply step uses it:
    ``copy`` (installed as is), ``merge`` (merged into an existing JSON file),
    ``api`` (sent to an API, never written on the host as is), ``define``
    (handed to libvirt), ``seed`` (packed into the cloud-init seed image).
    """

    template: str
    scope: str
    dest: str
    method: str = "copy"
    mode: str = "0644"
    # Where it is written under OUT/<host>/<scope>/; defaults to ``dest`` without its leading /.
    out: str | None = None
    # Only render when this condition of the render context holds (see render.conditions).
    when: str | None = None

    @property
    def out_path(self) -> str:
        return self.out or self.dest.lstrip("/")


@dataclass(frozen=True)
class TargetSpec:
    target: Target
    group: str
    playbook: str
    description: str
    files: tuple[FileSpec, ...]
    # Fact topics its templates read (facts.HostFacts.assumptions): only these assumptions are reported.
    facts_used: tuple[str, ...] = ()
    # Whether `provision --target T` can apply it in this version.
    apply_ready: bool = False
    # How the verification role reads the server's log since "@EPOCH" and its environment, in the target.
    log_command: str = "journalctl -u ollama --no-pager -o cat --since"
    env_command: str = "systemctl show ollama -p Environment --value"

    @property
    def playbook_path(self) -> Path:
        return PLAYBOOKS_DIR / self.playbook


_OLLAMA_UNIT = (
    "common/ollama.service.j2",
    "/etc/systemd/system/ollama.service",
)
_OLLAMA_DROPIN = (
    "common/override.conf.j2",
    "/etc/systemd/system/ollama.service.d/override.conf",
)


def _service_files(scope: str) -> tuple[FileSpec, ...]:
    return (
        FileSpec(_OLLAMA_UNIT[0], scope, _OLLAMA_UNIT[1]),
        FileSpec(_OLLAMA_DROPIN[0], scope, _OLLAMA_DROPIN[1]),
    )


TARGETS: dict[Target, TargetSpec] = {
    Target.native: TargetSpec(
        target=Target.native,
        group="native",
        playbook="native.yml",
        description="Ollama as a hardened systemd service on the host",
        files=_service_files("host"),
        apply_ready=True,
    ),
    Target.docker: TargetSpec(
        target=Target.docker,
        group="docker",
        playbook="docker.yml",
        description="Ollama in a Docker container with the NVIDIA runtime and a GPU request",
        files=(
            FileSpec("docker/compose.yaml.j2", "host", "{docker_project_dir}/compose.yaml"),
            FileSpec(
                "docker/daemon.json.j2", "host", "/etc/docker/daemon.json",
                method="merge", out="etc/docker/daemon.json.fragment",
            ),
        ),
    ),
    Target.lxc: TargetSpec(
        target=Target.lxc,
        group="lxc",
        playbook="lxc.yml",
        description="Ollama in an LXC container (Proxmox VE or plain LXC) with the NVIDIA nodes passed in",
        facts_used=("all", "driver", "devices", "gids", "proxmox", "cgroup"),
        files=(
            FileSpec("lxc/config.j2", "host", "{lxc_config_path}", when="is_plain_lxc"),
            FileSpec(
                "lxc/proxmox-api.json.j2", "host", "api:/nodes/{proxmox_node}/lxc",
                method="api", out="proxmox/lxc-{lxc_vmid}.json", when="is_proxmox",
            ),
            FileSpec(
                "lxc/proxmox-raw.conf.j2", "host", "/etc/pve/lxc/{lxc_vmid}.conf",
                method="append", out="etc/pve/lxc/{lxc_vmid}.conf.append", when="proxmox_raw",
            ),
            *_service_files("guest"),
        ),
    ),
    Target.kvm: TargetSpec(
        target=Target.kvm,
        group="kvm",
        playbook="kvm.yml",
        description="Ollama in a libvirt/KVM VM with the GPU passed through by VFIO",
        facts_used=("all", "cpu", "pci"),
        files=(
            FileSpec("kvm/domain.xml.j2", "host", "libvirt:{kvm_name}", method="define", out="libvirt/{kvm_name}.xml"),
            FileSpec("kvm/vfio.conf.j2", "host", "/etc/modprobe.d/vfio.conf"),
            FileSpec("kvm/modules-load.conf.j2", "host", "/etc/modules-load.d/vfio.conf"),
            FileSpec("kvm/grub-iommu.cfg.j2", "host", "/etc/default/grub.d/ollama-provisioner-iommu.cfg"),
            FileSpec("kvm/user-data.j2", "host", "{kvm_seed_dir}/user-data", method="seed"),
            FileSpec("kvm/meta-data.j2", "host", "{kvm_seed_dir}/meta-data", method="seed"),
            *_service_files("guest"),
        ),
    ),
}


def spec(target: Target | str) -> TargetSpec:
    return TARGETS[Target(target)]
