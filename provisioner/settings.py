"""One typed settings model per host, built from the host's merged inventory variables.

Every user-facing variable is declared here once, with its default and what it
allows. A bad value is reported as one line naming the host, the variable, the
value and what is allowed (see :func:`format_validation_error`).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import SettingsError
from .targets import Target

# Variables the user may set start with one of these; an unknown one is a typo.
USER_PREFIXES = ("ollama_", "lxc_", "kvm_", "libvirt_", "nvidia_")
# Roles' own public variables (role name + "_") are the roles' business, not the inventory's.
ROLE_PREFIXES = (
    "ollama_service_",
    "ollama_verify_",
    "ollama_container_",
    "nvidia_container_toolkit_",
    "nvidia_host_",
    "lxc_gpu_",
    "vfio_host_",
    "libvirt_guest_",
    "gpu_facts_",
)

OFFICIAL_RELEASE_URL = "https://github.com/ollama/ollama/releases/download/v{version}/{asset}"
# The first release packed as bin/ + lib/ollama/ (74d45f010); before it a raw binary.
FIRST_ARCHIVE_RELEASE = (0, 3, 7)
# From this release on the Linux bundle is .tar.zst (#13651), before it .tgz.
FIRST_ZSTD_RELEASE = (0, 14, 0)

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+-]+)?$")
_GO_DURATION_RE = re.compile(r"^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_GPU_ID = r"(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)"
_CUDA_DEVICES_RE = re.compile(rf"^(-1|{_GPU_ID}(,{_GPU_ID})*)$")
_PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


def parse_version(text: str) -> tuple[int, int, int]:
    m = _VERSION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a version like 0.12.3")
    return int(m[1]), int(m[2]), int(m[3])


def _abs_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path (starting with /), not {value!r}")
    return value.rstrip("/") or "/"


class ModelSpec(BaseModel):
    """A model to have ready: pulled by name, or created from a local GGUF file."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str
    source: str | None = Field(default=None, alias="from")
    insecure: bool = False

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _MODEL_NAME_RE.match(v):
            raise ValueError(f"model name {v!r} is not a name like llama3.2:3b or registry/ns/model:tag")
        return v

    @field_validator("source")
    @classmethod
    def _source(cls, v: str | None) -> str | None:
        if v is not None and not (v.startswith("/") or re.match(r"^https?://", v)):
            raise ValueError(f"'from' must be an absolute path or an http(s) URL of a GGUF file, not {v!r}")
        return v


class HostSettings(BaseModel):
    """Every variable a user sets for one host, with its default.

    ``host`` and ``target`` are not inventory variables; they come from where the
    host sits in the inventory.
    """

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    host: str
    target: Target
    # ansible_host of the host, when the inventory sets one.
    address: str | None = None

    # --- Ollama, all targets -------------------------------------------------
    ollama_version: str = "0.30.10"
    ollama_arch: Literal["amd64", "arm64"] = "amd64"
    ollama_archive: str | None = None
    ollama_sha256: str | None = None
    ollama_listen_address: str = "127.0.0.1:11434"
    ollama_models_dir: str = "/usr/share/ollama/.ollama/models"
    ollama_models: list[ModelSpec] = Field(default_factory=list)
    ollama_context_length: Annotated[int, Field(ge=256, le=1048576)] = 4096
    ollama_num_parallel: Annotated[int, Field(ge=1, le=64)] = 1
    ollama_max_loaded_models: Annotated[int, Field(ge=0, le=64)] = 0
    ollama_keep_alive: str = "5m"
    ollama_flash_attention: bool | None = None
    ollama_kv_cache_type: Literal["f16", "q8_0", "q4_0"] = "f16"
    ollama_cuda_visible_devices: str | None = None
    ollama_extra_env: dict[str, str] = Field(default_factory=dict)

    # --- host NVIDIA driver ----------------------------------------------------
    nvidia_driver_install: bool = False
    nvidia_driver_allow_reboot: bool = False

    # --- docker ------------------------------------------------------------------
    ollama_docker_image: str = "ollama/ollama"
    ollama_docker_tag: str | None = None
    ollama_docker_volume: str = "ollama"
    ollama_docker_container_name: str = "ollama"
    ollama_docker_project_dir: str = "/opt/ollama"
    ollama_docker_gpus: str = "all"

    # --- lxc ---------------------------------------------------------------------
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
    lxc_proxmox_api_host: str | None = None
    lxc_proxmox_api_port: Annotated[int, Field(ge=1, le=65535)] = 8006
    lxc_proxmox_api_user: str = "root@pam"
    lxc_proxmox_api_token_id: str | None = None
    lxc_proxmox_api_token_secret: SecretStr | None = None
    lxc_proxmox_validate_certs: bool = True
    lxc_proxmox_node: str | None = None
    lxc_proxmox_storage: str = "local-lvm"

    # --- kvm ---------------------------------------------------------------------
    kvm_name: str = "ollama-vm"
    kvm_gpu_pci_addresses: list[str] = Field(default_factory=list)
    kvm_vcpus: Annotated[int, Field(ge=1, le=512)] = 8
    kvm_memory_mib: Annotated[int, Field(ge=1024)] = 16384
    libvirt_uri: str = "qemu:///system"
    kvm_domain_type: Literal["kvm", "qemu"] = "kvm"
    kvm_machine: str = "q35"
    kvm_disk_image: str | None = None
    kvm_disk_size_gib: Annotated[int, Field(ge=8)] = 64
    kvm_base_image: str = "/var/lib/libvirt/images/debian-12-genericcloud-amd64.qcow2"
    kvm_firmware_code: str = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    kvm_firmware_vars: str = "/usr/share/OVMF/OVMF_VARS_4M.fd"
    kvm_hugepages: bool = False
    kvm_network: str = "default"
    kvm_iommu: Literal["auto", "intel", "amd"] = "auto"
    kvm_guest_user: str = "ollama-admin"
    kvm_ssh_authorized_keys: list[str] = Field(default_factory=list)

    # --- field checks ------------------------------------------------------------
    @field_validator("ollama_version")
    @classmethod
    def _version(cls, v: str) -> str:
        parse_version(v)
        v = v.lstrip("v")
        if parse_version(v) < FIRST_ARCHIVE_RELEASE:
            raise ValueError("releases before 0.3.7 ship a bare binary, not the bin/ + lib/ollama/ archive; use 0.3.7 or newer")
        return v

    @field_validator("ollama_archive")
    @classmethod
    def _archive(cls, v: str | None) -> str | None:
        if v is None or v.startswith("/") or re.match(r"^(https?|file)://", v):
            return v
        raise ValueError("must be an http(s):// or file:// URL or an absolute path on the controller")

    @field_validator("ollama_sha256")
    @classmethod
    def _sha(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = v.strip().lower().removeprefix("sha256:")
        if not _SHA256_RE.match(v):
            raise ValueError("must be 64 hexadecimal digits (optionally prefixed 'sha256:')")
        return v

    @field_validator("ollama_listen_address")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT like 127.0.0.1:11434 or [::1]:11434")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            if not re.match(r"^[A-Za-z0-9.-]+$", bare):
                raise ValueError("host part must be an IP address or a host name") from None
        return v

    @field_validator("ollama_models_dir", "lxc_path", "ollama_docker_project_dir", "kvm_base_image",
                     "kvm_firmware_code", "kvm_firmware_vars")
    @classmethod
    def _abs(cls, v: str) -> str:
        return _abs_path(v)

    @field_validator("ollama_models", mode="before")
    @classmethod
    def _models(cls, v: Any) -> Any:
        if v is None:
            return []
        if not isinstance(v, list):
            raise ValueError("must be a list of model names or {name, from} entries")
        return [{"name": m} if isinstance(m, str) else m for m in v]

    @field_validator("ollama_keep_alive", mode="before")
    @classmethod
    def _keep_alive(cls, v: Any) -> str:
        text = str(v)
        if re.match(r"^-?\d+$", text) or _GO_DURATION_RE.match(text):
            return text
        raise ValueError("must be a duration like 5m, 1h30m, 0 (unload at once) or -1 (keep forever)")

    @field_validator("ollama_cuda_visible_devices", mode="before")
    @classmethod
    def _cuda(cls, v: Any) -> str | None:
        if v is None:
            return None
        text = str(v).replace(" ", "")
        if not _CUDA_DEVICES_RE.match(text):
            raise ValueError("must be GPU indexes or UUIDs separated by commas (0,1 or GPU-…), or -1 for CPU only")
        return text

    @field_validator("ollama_extra_env")
    @classmethod
    def _extra_env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_NAME_RE.match(key):
                raise ValueError(f"environment variable name {key!r} must be upper case letters, digits and _")
        return {k: str(val) for k, val in v.items()}

    @field_validator("lxc_name", "kvm_name")
    @classmethod
    def _hostname(cls, v: str) -> str:
        if not _HOSTNAME_RE.match(v):
            raise ValueError("must be a host name: lower-case letters, digits and '-', at most 63 characters")
        return v

    @field_validator("lxc_vmid")
    @classmethod
    def _vmid(cls, v: int | None) -> int | None:
        if v is not None and not 100 <= v <= 999_999_999:
            raise ValueError("Proxmox VMIDs are integers from 100 to 999999999")
        return v

    @field_validator("kvm_gpu_pci_addresses", mode="before")
    @classmethod
    def _pci(cls, v: Any) -> list[str]:
        if v is None:
            return []
        if isinstance(v, str):
            v = [v]
        out: list[str] = []
        for addr in v:
            a = str(addr).lower()
            if not _PCI_RE.match(a):
                raise ValueError(f"{addr!r} is not a full PCI address like 0000:01:00.0 (domain:bus:slot.function)")
            if a in out:
                raise ValueError(f"{a} is listed twice")
            out.append(a)
        return out

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

    @field_validator("ollama_docker_gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> str:
        text = str(v)
        if text == "all" or (text.isdigit() and int(text) > 0):
            return text
        raise ValueError("must be 'all' or a number of GPUs greater than 0")

    # --- checks across variables -------------------------------------------------
    @model_validator(mode="after")
    def _cross(self) -> HostSettings:
        if self.ollama_kv_cache_type != "f16" and self.ollama_flash_attention is False:
            raise ValueError(
                f"ollama_kv_cache_type={self.ollama_kv_cache_type!r} needs flash attention, but "
                "ollama_flash_attention is false; set ollama_flash_attention: true or ollama_kv_cache_type: f16"
            )
        if self.target is Target.lxc and self.lxc_backend == "proxmox" and self.lxc_vmid is None:
            raise ValueError("lxc_vmid is required when lxc_backend is 'proxmox'; set lxc_vmid: 100 or higher")
        if self.target is Target.lxc and self.lxc_backend == "lxc" and self.lxc_passthrough == "devN":
            raise ValueError("lxc_passthrough='devN' exists only on Proxmox VE >= 8.1; use 'raw' or 'auto' with lxc_backend: lxc")
        if self.target is Target.kvm and not self.kvm_gpu_pci_addresses:
            raise ValueError(
                "kvm_gpu_pci_addresses is empty; list the GPU's PCI functions, e.g. "
                "['0000:01:00.0', '0000:01:00.1'] (see `lspci -D -d 10de:`)"
            )
        secret = self.lxc_proxmox_api_token_secret
        if (self.lxc_proxmox_api_token_id is None) != (secret is None) and self.target is Target.lxc:
            raise ValueError("lxc_proxmox_api_token_id and lxc_proxmox_api_token_secret go together; set both or neither")
        return self

    # --- derived values ------------------------------------------------------------
    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return parse_version(self.ollama_version)

    @property
    def archive_ext(self) -> str:
        return "tar.zst" if self.version_tuple >= FIRST_ZSTD_RELEASE else "tgz"

    @property
    def archive_asset(self) -> str:
        return f"ollama-linux-{self.ollama_arch}.{self.archive_ext}"

    @property
    def archive_url(self) -> str:
        """Where the archive comes from: the user's choice or the official release asset."""
        if self.ollama_archive:
            return self.ollama_archive
        return OFFICIAL_RELEASE_URL.format(version=self.ollama_version, asset=self.archive_asset)

    @property
    def checksum_url(self) -> str | None:
        """The release's sha256sum.txt beside the archive, when no ollama_sha256 is given."""
        if self.ollama_sha256:
            return None
        url = self.archive_url
        return url.rsplit("/", 1)[0] + "/sha256sum.txt"

    @property
    def listen_host(self) -> str:
        return self.ollama_listen_address.rpartition(":")[0]

    @property
    def listen_port(self) -> int:
        return int(self.ollama_listen_address.rpartition(":")[2])

    @property
    def api_url(self) -> str:
        """Where the server answers on its own machine: a wildcard listen address is reached on loopback."""
        host = {"0.0.0.0": "127.0.0.1", "[::]": "[::1]", "": "127.0.0.1"}.get(self.listen_host, self.listen_host)
        return f"http://{host}:{self.listen_port}"

    def service_install(self) -> dict[str, Any]:
        """What the ollama_service role needs beyond the rendered files: release, checksum, models."""
        return {
            "version": self.ollama_version,
            "archive_url": self.archive_url,
            "sha256": self.ollama_sha256 or "",
            "checksum_url": self.checksum_url or "",
            "api_url": self.api_url,
            "models_dir": self.ollama_models_dir,
            "models": [m.model_dump(by_alias=True, exclude_none=True) for m in self.ollama_models],
            "keep_alive": self.ollama_keep_alive,
        }

    @property
    def docker_tag(self) -> str:
        return self.ollama_docker_tag or self.ollama_version

    @property
    def docker_volume_is_bind(self) -> bool:
        return self.ollama_docker_volume.startswith("/")

    @property
    def is_proxmox(self) -> bool:
        return self.target is Target.lxc and self.lxc_backend == "proxmox"

    @property
    def is_plain_lxc(self) -> bool:
        return self.target is Target.lxc and self.lxc_backend == "lxc"

    @property
    def lxc_config_path(self) -> str:
        return f"{self.lxc_path}/{self.lxc_name}/config"

    @property
    def lxc_rootfs_path(self) -> str:
        return f"{self.lxc_path}/{self.lxc_name}/rootfs"

    @property
    def lxc_bridge_name(self) -> str:
        return self.lxc_bridge or ("vmbr0" if self.lxc_backend == "proxmox" else "lxcbr0")

    @property
    def lxc_template_name(self) -> str:
        if self.lxc_template:
            return self.lxc_template
        if self.lxc_backend == "proxmox":
            return "local:vztmpl/debian-12-standard_12.7-1_amd64.tar.zst"
        return "download:debian:bookworm:amd64"

    @property
    def proxmox_node(self) -> str:
        return self.lxc_proxmox_node or self.host.split(".")[0]

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
    def docker_project_dir(self) -> str:
        return self.ollama_docker_project_dir

    @property
    def ollama_environment(self) -> dict[str, str]:
        """The server's environment, in one place for the drop-in and the compose file alike."""
        env: dict[str, str] = {
            "OLLAMA_HOST": "0.0.0.0:11434" if self.target is Target.docker else self.ollama_listen_address,
        }
        if self.target is not Target.docker:
            env["OLLAMA_MODELS"] = self.ollama_models_dir
        env["OLLAMA_CONTEXT_LENGTH"] = str(self.ollama_context_length)
        env["OLLAMA_NUM_PARALLEL"] = str(self.ollama_num_parallel)
        if self.ollama_max_loaded_models:
            env["OLLAMA_MAX_LOADED_MODELS"] = str(self.ollama_max_loaded_models)
        env["OLLAMA_KEEP_ALIVE"] = self.ollama_keep_alive
        if self.ollama_flash_attention is not None:
            env["OLLAMA_FLASH_ATTENTION"] = "1" if self.ollama_flash_attention else "0"
        env["OLLAMA_KV_CACHE_TYPE"] = self.ollama_kv_cache_type
        if self.ollama_cuda_visible_devices is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.ollama_cuda_visible_devices
        env.update(self.ollama_extra_env)
        return env

    def public_dict(self) -> dict[str, Any]:
        """All settings as plain data, secrets masked: safe to print or log."""
        data = self.model_dump(mode="json", by_alias=True)
        if self.lxc_proxmox_api_token_secret is not None:
            data["lxc_proxmox_api_token_secret"] = "********"
        return data


KNOWN_VARIABLES = frozenset(n for n in HostSettings.model_fields if n not in ("host", "target", "address"))


def unknown_variables(variables: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Variables with one of our prefixes that no setting declares, each with a close match."""
    found = []
    for name in sorted(variables):
        if not name.startswith(USER_PREFIXES) or name in KNOWN_VARIABLES:
            continue
        if name.startswith(ROLE_PREFIXES) or name.startswith("__"):
            continue
        close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1, cutoff=0.75)
        found.append((name, close[0] if close else None))
    return found


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def format_validation_error(host: str, exc: ValidationError) -> list[str]:
    """One line per problem: host, variable, value, what is allowed."""
    lines = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        loc = [str(p) for p in err["loc"]]
        if not loc:  # a check across variables: the message names them
            lines.append(f"host {host!r}: {msg}")
            continue
        variable = loc[0]
        where = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in loc[1:])
        value = err.get("input")
        lines.append(f"host {host!r}: {variable}{where} = {_short(value)}: {msg}")
    return lines


def build_settings(host: str, target: Target, variables: dict[str, Any],
                   address: str | None = None) -> HostSettings:
    """Validate one host's merged variables; raise SettingsError with one line per problem."""
    problems = []
    for name, close in unknown_variables(variables):
        hint = f"; did you mean {close}?" if close else "; see the inventory reference in README.md"
        problems.append(f"host {host!r}: unknown variable {name}{hint}")
    try:
        settings = HostSettings.model_validate({**variables, "host": host, "target": target, "address": address})
    except ValidationError as exc:
        problems.extend(format_validation_error(host, exc))
        settings = None
    if problems:
        raise SettingsError(problems[0], details=problems[1:])
    assert settings is not None
    return settings
