"""kvm: Ollama in a libvirt/KVM virtual machine with the GPU passed through by VFIO."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import fields
from . import vfio
from .base import FileSpec, Place, TargetModule, proxy_files, service_files

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
# The namespace of the <metadata> element that marks a domain as this project's (role kvm_vm).
MARK_NS = "urn:ollama-provisioner:kvm-domain:1"
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
    # The guest's disk is a qcow2 overlay on this base image: a path on the host, or an http(s) URL
    # downloaded once and checked against kvm_base_image_checksum_url (a SHA256SUMS/SHA512SUMS file).
    kvm_base_image: str | None = None
    kvm_base_image_checksum_url: str | None = None
    kvm_disk_gib: Annotated[int, Field(ge=4)] = 40
    # Direct kernel boot (kernel and initrd on the host) instead of firmware; unset: firmware boot.
    kvm_kernel: str | None = None
    kvm_initrd: str | None = None
    kvm_kernel_args: str = "root=/dev/vda rw console=ttyS0"
    # A changed definition of a running guest restarts it only when allowed (else at its next boot).
    kvm_allow_restart: bool = False
    # How long to wait for the guest's address (DHCP lease or guest agent) and its SSH server.
    kvm_address_timeout: Annotated[int, Field(ge=10)] = 300
    # The private key (on the controller) whose public half is in kvm_ssh_authorized_keys; unset:
    # SSH's own defaults (~/.ssh/id_*, the agent).
    kvm_ssh_private_key_file: str | None = None
    # Exposed (ollama_expose_address), the TLS and token proxy runs inside the guest. True: the host
    # forwards ollama_expose_address to the guest's proxy (role ollama_forward, for a guest behind
    # libvirt's NAT network; needs systemd on the host). False: the guest is on a LAN bridge
    # (kvm_network names a bridged libvirt network) and its proxy listens on ollama_expose_address itself.
    kvm_expose_forward: bool = True

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

    @field_validator("kvm_ssh_authorized_keys")
    @classmethod
    def _keys(cls, v: list[str]) -> list[str]:
        # An absolute path of a .pub file on the controller stands for the keys in it.
        keys = []
        for entry in v:
            if entry.startswith("/") and entry.endswith(".pub"):
                try:
                    keys += [line.strip() for line in open(entry, encoding="utf-8") if line.strip()]
                except OSError as exc:
                    raise ValueError(f"{entry} cannot be read ({exc.strerror}); give the public key itself or the "
                                     "path of a readable .pub file on the controller") from None
            else:
                keys.append(entry)
        return keys

    @field_validator("kvm_kernel", "kvm_initrd", "kvm_ssh_private_key_file", "kvm_disk_image")
    @classmethod
    def _abs_or_unset(cls, v: str | None) -> str | None:
        return v if v is None else fields.abs_path(v)

    @field_validator("kvm_base_image")
    @classmethod
    def _base(cls, v: str | None) -> str | None:
        if v is None or re.match(r"^https?://", v):
            return v
        if not v.startswith("/"):
            raise ValueError("must be an absolute path on the host or an http(s):// URL of a qcow2 cloud image")
        return v

    @field_validator("kvm_base_image_checksum_url")
    @classmethod
    def _sums(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https?://", v):
            raise ValueError("must be the http(s):// URL of the image's checksum file (SHA256SUMS or SHA512SUMS)")
        return v

    @property
    def kvm_disk_path(self) -> str:
        return self.kvm_disk_image or f"/var/lib/libvirt/images/{self.kvm_name}.qcow2"

    @property
    def kvm_seed_dir(self) -> str:
        return f"/var/lib/libvirt/images/{self.kvm_name}-seed"

    @property
    def kvm_seed_iso(self) -> str:
        return f"/var/lib/libvirt/images/{self.kvm_name}-seed.iso"

    @property
    def kvm_base_dir(self) -> str:
        """Where a base image given by URL is downloaded to, on the host."""
        return "/var/lib/libvirt/images/ollama-provisioner-base"


def guest_mac(settings: HostSettings) -> str:
    """A stable MAC for the guest's NIC (QEMU's 52:54:00 prefix): the seed's network config finds the NIC
    by it, and a redefined domain keeps its DHCP lease."""
    digest = hashlib.sha256(f"{settings.host}/{settings.kvm_name}".encode()).hexdigest()
    return "52:54:00:" + ":".join(digest[i:i + 2] for i in (0, 2, 4))


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
    apply_ready = True
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
        FileSpec("kvm/network-config.j2", "host", "{kvm_seed_dir}/network-config", method="seed"),
        *service_files("guest"),
        # The proxy (when exposed) runs inside the guest next to the service.
        *proxy_files("guest"),
    )
    fixes = {
        "no-device-node": "check that the GPU is in the domain (<hostdev> in `virsh dumpxml`), bound to vfio-pci on "
                          "the host (`lspci -nnk`), and that the NVIDIA driver is installed and loaded in the guest",
        "driver-mismatch": "reboot the guest after its driver upgrade, or reinstall one driver version",
        "vm-cpu-without-avx": "set <cpu mode='host-passthrough'/> in the domain (`virsh edit`), or CPU type 'host' on "
                              "Proxmox, and restart the VM",
    }

    def check_settings(self, settings: HostSettings) -> list[str]:
        # An empty kvm_gpu_pci_addresses is a VM without a GPU (preflight says so), not a mistake.
        problems = []
        base = settings.kvm_base_image or ""
        if base.startswith(("http://", "https://")) and not settings.kvm_base_image_checksum_url:
            problems.append(f"kvm_base_image = {base!r} is a URL without kvm_base_image_checksum_url; set it to the "
                            "image's published checksum file (e.g. .../SHA512SUMS), or give a local path")
        if self._forwarded(settings) and not fields.is_ip_address(settings.expose_host):
            problems.append(f"ollama_expose_address = {settings.ollama_expose_address!r} names a host; the libvirt "
                            "host's forward listens on an address: give an IP address of the host (or 0.0.0.0:PORT), "
                            "or set kvm_expose_forward: false with the guest on a LAN bridge")
        if settings.kvm_initrd and not settings.kvm_kernel:
            problems.append("kvm_initrd is set without kvm_kernel; set kvm_kernel too (direct kernel boot) or remove it")
        return problems

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
            "mark_ns": MARK_NS,
            "mac": guest_mac(settings),
        }

    def conditions(self, settings: HostSettings, facts: HostFacts) -> dict[str, bool]:
        # Proxmox VE booted by systemd-boot reads /etc/kernel/cmdline, not GRUB's files.
        return {"grub": facts.boot_loader != "systemd-boot"}

    def render_notes(self, settings: HostSettings, facts: HostFacts, texts: Mapping[str, str]) -> list[str]:
        return [*self._guest_notes(settings), *self._host_notes(settings, facts)]

    def _guest_notes(self, settings: HostSettings) -> list[str]:
        notes = []
        if settings.kvm_domain_type == "qemu":
            notes.append(f"VM {settings.kvm_name}: kvm_domain_type 'qemu' emulates the CPU (TCG), where host-passthrough "
                         "is impossible: CPU mode host-model (libvirt's closest model of what QEMU emulates) with avx "
                         "and avx2 required; slow, for tests; use 'kvm' on a real host")
        if not settings.kvm_gpu_pci_addresses:
            notes.append(f"VM {settings.kvm_name}: no GPU listed (kvm_gpu_pci_addresses is empty): a CPU-only VM")
        return notes

    def _host_notes(self, settings: HostSettings, facts: HostFacts) -> list[str]:
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
        if not settings.kvm_ssh_authorized_keys:
            result.problems.append(f"{settings.host}: kvm_ssh_authorized_keys is empty: the guest would have no way in "
                                   "for Ansible; add your public key (e.g. the contents of ~/.ssh/id_ed25519.pub)")
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
            **self._vm_vars(settings),
            "vfio_host_pci_addresses": list(settings.kvm_gpu_pci_addresses),
            "vfio_host_allow_reboot": settings.kvm_allow_reboot,
            **self._forward_vars(settings),
            **(checked.role_vars if checked else {}),
        }

    def _vm_vars(self, settings: HostSettings) -> dict[str, Any]:
        """Role kvm_vm's variables: the domain, its disk and seed (the rendered files are under OUT/<host>/host/)."""
        return {
            "kvm_vm_name": settings.kvm_name,
            "kvm_vm_uri": settings.libvirt_uri,
            "kvm_vm_mark_ns": MARK_NS,
            "kvm_vm_xml_file": f"host/libvirt/{settings.kvm_name}.xml",
            "kvm_vm_seed_files": [f"host{settings.kvm_seed_dir}/{n}" for n in ("user-data", "meta-data", "network-config")],
            "kvm_vm_seed_dir": settings.kvm_seed_dir,
            "kvm_vm_seed_iso": settings.kvm_seed_iso,
            "kvm_vm_disk_path": settings.kvm_disk_path,
            "kvm_vm_disk_gib": settings.kvm_disk_gib,
            "kvm_vm_base_image": settings.kvm_base_image or "",
            "kvm_vm_base_image_checksum_url": settings.kvm_base_image_checksum_url or "",
            "kvm_vm_base_dir": settings.kvm_base_dir,
            "kvm_vm_allow_restart": settings.kvm_allow_restart,
            "kvm_vm_address_timeout": settings.kvm_address_timeout,
        }

    # --- exposure: the proxy inside the guest, and the host's forward to it ---------------------
    @staticmethod
    def _forwarded(settings: HostSettings) -> bool:
        return settings.expose.exposed and settings.kvm_expose_forward

    def proxy_listen(self, settings: HostSettings) -> str | None:
        # Forwarded, the exposed address is the host's: the guest's proxy listens on the same port on
        # every address of the guest, and the host relays to it.
        if self._forwarded(settings):
            return f"0.0.0.0:{settings.expose_port}"
        return super().proxy_listen(settings)

    def proxy_vars(self, settings: HostSettings) -> dict[str, Any]:
        found = super().proxy_vars(settings)
        if self._forwarded(settings):  # the proxy's own health check, inside the guest
            found["ollama_proxy_check_host"] = "127.0.0.1"
        return found

    def expose_url(self, settings: HostSettings, place_address: str | None) -> str | None:
        # Forwarded: through the host's forward (the exposed address, or the host's own address for a
        # wildcard), not the guest's address; on a LAN bridge: the guest's proxy itself.
        return super().expose_url(settings, None if self._forwarded(settings) else place_address)

    def _forward_vars(self, settings: HostSettings) -> dict[str, Any]:
        """Role ollama_forward's variables: present while the host is exposed through a forward, absent
        otherwise (a forward left from an earlier exposure is removed)."""
        return {
            "ollama_forward_enabled": self._forwarded(settings),
            "ollama_forward_name": settings.kvm_name,
            "ollama_forward_listen": settings.ollama_expose_address or "",
            "ollama_forward_port": settings.expose_port,
        }

    def pci_addresses(self, settings: HostSettings) -> list[str]:
        return list(settings.kvm_gpu_pci_addresses)

    def place(self, settings: HostSettings) -> Place:
        # The guest over SSH, through the host as a jump host (ssh_via_host: add-places builds the ProxyJump
        # from the inventory host's own connection; none where the controller is the host). Its address is
        # known only once it runs: role kvm_vm's address.yml reads it (DHCP lease or guest agent).
        connection: dict[str, Any] = {
            "ansible_connection": "ssh",
            "ansible_user": settings.kvm_guest_user,
            # cloud-init gives that user passwordless sudo.
            "ansible_become": True,
            "ansible_python_interpreter": "/usr/bin/python3",
            # A VM's host keys are made at its first boot: new, unknown to the controller.
            "ansible_ssh_common_args": "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null",
            "ssh_via_host": True,
            "address_role": "kvm_vm",
            "address_lookup": {"name": settings.kvm_name, "uri": settings.libvirt_uri, "mark_ns": MARK_NS},
        }
        if settings.kvm_ssh_private_key_file:
            connection["ansible_ssh_private_key_file"] = settings.kvm_ssh_private_key_file
        return Place(name=f"{settings.host}/vm-{settings.kvm_name}",
                     description=f"VM {settings.kvm_name} on {settings.host}", connection=connection)

    def uninstall_vars(self, purge: bool, destroy: bool = False, revert_host: bool = False) -> dict[str, Any]:
        # revert_host: role vfio_host removes its files and kernel arguments from the host (playbooks/kvm.yml).
        return {**super().uninstall_vars(purge, destroy), "kvm_vm_destroy": destroy,
                **({"vfio_host_state": "absent"} if revert_host else {})}

    def uninstall_kept(self, purge: bool, destroy: bool = False, revert_host: bool = False) -> str:
        if destroy:
            kept = "the VM, its disk and seed were destroyed, models included (the base image was kept)"
        else:
            kept = (super().uninstall_kept(purge, destroy)
                    + " inside the VM; the VM was kept (--destroy removes it and its disk)")
        if revert_host:
            return kept + ("; the host's VFIO preparation was reverted (the project's files and kernel arguments): "
                           "its GPU goes back to the host's drivers at the next boot, which kvm_allow_reboot: true "
                           "makes at once")
        return kept + "; the host's VFIO preparation, if any, was kept (--revert-host reverts it)"


TARGET = KvmTarget()
