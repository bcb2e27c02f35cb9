"""kvm: Ollama in a libvirt/KVM virtual machine with the GPU passed through by VFIO."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import fields
from . import vfio
from .base import FileSpec, Place, TargetModule, service_files

if TYPE_CHECKING:
    from ..facts import HostFacts
    from ..preflight import HostPreflight
    from ..settings import HostSettings

# Where the host's VFIO preparation lands (role vfio_host installs each; files named after the project).
MODPROBE_DEST = "/etc/modprobe.d/ollama-provisioner-vfio.conf"
MODULES_DEST = "/etc/modules-load.d/ollama-provisioner-vfio.conf"
BIND_DEST = "/usr/local/sbin/ollama-provisioner-vfio-bind"
INITRAMFS_HOOK_DEST = "/etc/initramfs-tools/hooks/ollama-provisioner-vfio"
GRUB_DEST = "/etc/default/grub.d/ollama-provisioner-iommu.cfg"
# Host drivers that may claim a function of an NVIDIA card before vfio-pci, by the card's class.
CLAIMING_DRIVERS = {"03": ["nvidia", "nouveau", "nvidiafb"], "0403": ["snd_hda_intel"], "0c03": ["xhci_pci"],
                    "0c80": ["ucsi_ccg", "i2c_nvidia_gpu"]}


class KvmSettings(BaseModel):
    """The VM: libvirt connection, GPU functions, size, disk, firmware, network, guest user."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    kvm_name: str = "ollama-vm"
    kvm_gpu_pci_addresses: list[str] = Field(default_factory=list)
    kvm_vcpus: Annotated[int, Field(ge=1, le=512)] = 8
    kvm_memory_mib: Annotated[int, Field(ge=1024)] = 16384
    libvirt_uri: str = "qemu:///system"
    kvm_domain_type: Literal["kvm", "qemu"] = "kvm"
    kvm_machine: str = "q35"
    kvm_disk_image: str | None = None
    kvm_firmware_code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    kvm_firmware_vars: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    kvm_hugepages: bool = False
    kvm_network: str = "default"
    kvm_iommu: Literal["auto", "intel", "amd"] = "auto"
    kvm_guest_user: str = "ollama-admin"
    kvm_ssh_authorized_keys: list[str] = Field(default_factory=list)
    # Pass the host's boot display (boot_vga 1) too; the host then has no local console.
    kvm_allow_boot_gpu: bool = False
    # Reboot the host when its VFIO preparation needs one; otherwise stop and say so.
    kvm_allow_reboot: bool = False

    @field_validator("kvm_name")
    @classmethod
    def _name(cls, v: str) -> str:
        return fields.hostname(v)

    @field_validator("kvm_gpu_pci_addresses", mode="before")
    @classmethod
    def _pci(cls, v: Any) -> list[str]:
        return fields.pci_addresses(v)

    @field_validator("kvm_machine")
    @classmethod
    def _machine(cls, v: str) -> str:
        if not re.match(r"^(q35|pc-q35-\d+\.\d+)$", v):
            raise ValueError("GPU passthrough needs a PCIe machine: q35 or a versioned pc-q35-X.Y")
        return v

    @field_validator("libvirt_uri")
    @classmethod
    def _uri(cls, v: str) -> str:
        if not re.match(r"^[a-z][a-z0-9+]*://", v):
            raise ValueError("must be a libvirt URI like qemu:///system or qemu+ssh://root@host/system")
        return v

    @field_validator("kvm_firmware_code", "kvm_firmware_vars")
    @classmethod
    def _abs(cls, v: str) -> str:
        return fields.abs_path(v)

    @property
    def kvm_disk_path(self) -> str:
        return self.kvm_disk_image or f"/var/lib/libvirt/images/{self.kvm_name}.qcow2"

    @property
    def kvm_seed_dir(self) -> str:
        return f"/var/lib/libvirt/images/{self.kvm_name}-seed"

    @property
    def kvm_seed_iso(self) -> str:
        return f"/var/lib/libvirt/images/{self.kvm_name}-seed.iso"


def hostdevs(settings: HostSettings, facts: HostFacts) -> list[dict[str, str]]:
    out = []
    for addr in settings.kvm_gpu_pci_addresses:
        domain, bus, rest = addr.split(":")
        slot, function = rest.split(".")
        out.append({
            "address": addr,
            "domain": f"0x{domain}",
            "bus": f"0x{bus}",
            "slot": f"0x{slot}",
            "function": f"0x{function}",
            "ids": facts.pci_ids(addr) or "",
        })
    return out


def claiming_drivers(settings: HostSettings, facts: HostFacts) -> list[str]:
    """The host drivers that could claim a listed function first: vfio-pci is loaded before each (softdep)."""
    drivers = list(CLAIMING_DRIVERS["03"])
    for addr in settings.kvm_gpu_pci_addresses:
        dev = facts.pci_device(addr)
        code = (dev.class_code or "") if dev else ""
        if not code and not addr.endswith(".0"):
            code = "0403"  # not discovered: the second function of a card is its HDMI audio
        for prefix, names in CLAIMING_DRIVERS.items():
            if code.startswith(prefix):
                drivers += [n for n in names if n not in drivers]
    return drivers


def iommu_vendor(settings: HostSettings, facts: HostFacts) -> str:
    if settings.kvm_iommu != "auto":
        return settings.kvm_iommu
    return "amd" if facts.cpu_vendor == "amd" else "intel"


class KvmTarget(TargetModule):
    name = "kvm"
    description = "Ollama in a libvirt/KVM VM with the GPU passed through by VFIO"
    settings_models = (KvmSettings,)
    facts_used = ("all", "cpu", "pci")
    service_scope = "guest"
    virtual_cpu = True
    files = (
        FileSpec("kvm/domain.xml.j2", "host", "libvirt:{kvm_name}", method="define", out="libvirt/{kvm_name}.xml"),
        FileSpec("kvm/vfio.conf.j2", "host", MODPROBE_DEST),
        FileSpec("kvm/vfio-bind.sh.j2", "host", BIND_DEST, mode="0755"),
        FileSpec("kvm/initramfs-hook.sh.j2", "host", INITRAMFS_HOOK_DEST, mode="0755"),
        FileSpec("kvm/modules-load.conf.j2", "host", MODULES_DEST),
        FileSpec("kvm/grub-iommu.cfg.j2", "host", GRUB_DEST, when="grub"),
        FileSpec("kvm/user-data.j2", "host", "{kvm_seed_dir}/user-data", method="seed"),
        FileSpec("kvm/meta-data.j2", "host", "{kvm_seed_dir}/meta-data", method="seed"),
        *service_files("guest"),
    )
    fixes = {
        "no-device-node": "check that the GPU is in the domain (<hostdev> in `virsh dumpxml`), bound to vfio-pci on "
                          "the host (`lspci -nnk`), and that the NVIDIA driver is installed and loaded in the guest",
        "driver-mismatch": "reboot the guest after its driver upgrade, or reinstall one driver version",
        "vm-cpu-without-avx": "set <cpu mode='host-passthrough'/> in the domain (`virsh edit`), or CPU type 'host' on "
                              "Proxmox, and restart the VM",
    }

    def check_settings(self, settings: HostSettings) -> list[str]:
        if not settings.kvm_gpu_pci_addresses:
            return ["kvm_gpu_pci_addresses is empty; list the GPU's PCI functions, e.g. "
                    "['0000:01:00.0', '0000:01:00.1'] (see `lspci -D -d 10de:`)"]
        return []

    def context(self, settings: HostSettings, facts: HostFacts) -> dict[str, Any]:
        devs = hostdevs(settings, facts)
        iommu = iommu_vendor(settings, facts)
        return {
            "hostdevs": devs,
            "claiming_drivers": claiming_drivers(settings, facts),
            "iommu": iommu,
            "kernel_args": vfio.kernel_args(iommu),
            # address=0xVENDOR:0xDEVICE, as the bind script compares them with sysfs.
            "bind_pairs": " ".join(f"{d['address']}=0x{d['ids'].replace(':', ':0x')}" for d in devs),
            "bind_dest": BIND_DEST,
            "modprobe_dest": MODPROBE_DEST,
        }

    def conditions(self, settings: HostSettings, facts: HostFacts) -> dict[str, bool]:
        # Proxmox VE booted by systemd-boot reads /etc/kernel/cmdline, not GRUB's files.
        return {"grub": facts.boot_loader != "systemd-boot"}

    def render_notes(self, settings: HostSettings, facts: HostFacts, texts: Mapping[str, str]) -> list[str]:
        args = " ".join(vfio.kernel_args(iommu_vendor(settings, facts)))
        if facts.boot_loader == "systemd-boot":
            return [f"kernel arguments {args} are added to /etc/kernel/cmdline (Proxmox VE booted by systemd-boot), "
                    "then `proxmox-boot-tool refresh`"]
        return [f"kernel arguments {args} come from the GRUB drop-in, then `update-grub`"]

    def preflight(self, settings: HostSettings, facts: HostFacts) -> HostPreflight:
        """The VFIO host checks (provisioner/targets/vfio.py); the host's own NVIDIA driver plays no part:
        the card goes to the VM, and the guest gets the driver."""
        from ..preflight import HostPreflight

        result = HostPreflight(settings.host)
        addresses = list(settings.kvm_gpu_pci_addresses)
        iommu = iommu_vendor(settings, facts)
        result.role_vars = {"vfio_host_kernel_args": vfio.kernel_args(iommu)}
        if not addresses:
            result.cpu_only = True
            result.notes.append(f"{settings.host}: no GPU listed (kvm_gpu_pci_addresses is empty): a VM without "
                                "a GPU; the verification is expected to report 100% CPU")
            return result
        result.problems = vfio.check(settings.host, addresses, facts, iommu=iommu,
                                     allow_boot_gpu=settings.kvm_allow_boot_gpu)
        if not result.problems:
            result.notes.append(vfio.describe_ok(settings.host, addresses, facts))
        return result

    def host_vars(self, settings: HostSettings, checked: HostPreflight | None) -> dict[str, Any]:
        return {
            **super().host_vars(settings, checked),
            "vfio_host_pci_addresses": list(settings.kvm_gpu_pci_addresses),
            "vfio_host_allow_reboot": settings.kvm_allow_reboot,
            **(checked.role_vars if checked else {}),
        }

    def pci_addresses(self, settings: HostSettings) -> list[str]:
        return list(settings.kvm_gpu_pci_addresses)

    def place(self, settings: HostSettings) -> Place:
        # The guest over SSH, through the host as a jump host; its address is found when it boots.
        return Place(name=f"{settings.host}/vm-{settings.kvm_name}",
                     description=f"VM {settings.kvm_name} on {settings.host}",
                     connection={"ansible_user": settings.kvm_guest_user,
                                 "ansible_ssh_common_args": f"-o ProxyJump={settings.address or settings.host}"})


TARGET = KvmTarget()
