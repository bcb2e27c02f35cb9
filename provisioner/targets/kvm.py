"""kvm: Ollama in a libvirt/KVM virtual machine with the GPU passed through by VFIO."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import fields
from .base import FileSpec, Place, TargetModule, service_files

if TYPE_CHECKING:
    from ..facts import HostFacts
    from ..settings import HostSettings


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
        FileSpec("kvm/vfio.conf.j2", "host", "/etc/modprobe.d/vfio.conf"),
        FileSpec("kvm/modules-load.conf.j2", "host", "/etc/modules-load.d/vfio.conf"),
        FileSpec("kvm/grub-iommu.cfg.j2", "host", "/etc/default/grub.d/ollama-provisioner-iommu.cfg"),
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
        return {
            "hostdevs": devs,
            "vfio_ids": sorted({d["ids"] for d in devs if d["ids"]}),
            "has_audio_function": any(not d["address"].endswith(".0") for d in devs),
            "iommu": iommu_vendor(settings, facts),
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
