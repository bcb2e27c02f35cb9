"""One typed settings model per host, composed of one model per concern.

The inventory's variable names are flat (``ollama_version``, ``lxc_vmid``, ``kvm_name``)
and stay the user's contract. Each concern validates its own names, with its own checks
and derived values: the Ollama server and the host's NVIDIA driver here, Docker, LXC
(with its Proxmox part) and KVM in their target modules (provisioner/targets/). A host
is validated against every concern; the checks across variables of a target apply to
the hosts of that target only. A bad value is reported as one line naming the host, the
variable, the value and what is allowed (see :func:`format_validation_error`).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from functools import cache
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

from . import fields, targets
from .errors import SettingsError
from .fields import parse_version
from .targets import Target


OFFICIAL_RELEASE_URL = "https://github.com/ollama/ollama/releases/download/v{version}/{asset}"
# The first release packed as bin/ + lib/ollama/ (74d45f010); before it a raw binary.
FIRST_ARCHIVE_RELEASE = (0, 3, 7)
# From this release on the Linux bundle is .tar.zst (#13651), before it .tgz.
FIRST_ZSTD_RELEASE = (0, 14, 0)

_GO_DURATION_RE = re.compile(r"^-?(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+$")
_GPU_ID = r"(\d+|GPU-[0-9a-fA-F-]+|MIG-[0-9a-zA-Z/-]+)"
_CUDA_DEVICES_RE = re.compile(rf"^(-1|{_GPU_ID}(,{_GPU_ID})*)$")
_MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/:-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Z_][A-Z0-9_]*$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")


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


class OllamaSettings(BaseModel):
    """The Ollama server, on every target: release, listen address, models, tuning."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

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
    # How many tokens the verification's timed generation asks for (tokens/s is measured over them).
    ollama_verify_tokens: Annotated[int, Field(ge=1, le=4096)] = 64

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

    @field_validator("ollama_models_dir")
    @classmethod
    def _abs(cls, v: str) -> str:
        return fields.abs_path(v)

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

    @model_validator(mode="after")
    def _flash_attention(self) -> OllamaSettings:
        if self.ollama_kv_cache_type != "f16" and self.ollama_flash_attention is False:
            raise ValueError(
                f"ollama_kv_cache_type={self.ollama_kv_cache_type!r} needs flash attention, but "
                "ollama_flash_attention is false; set ollama_flash_attention: true or ollama_kv_cache_type: f16"
            )
        return self

    # --- derived values ----------------------------------------------------------------------
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
        return self.archive_url.rsplit("/", 1)[0] + "/sha256sum.txt"

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

    def environment(self, *, listen: str, models_dir: str | None) -> dict[str, str]:
        """The server's environment; the target says where it listens and keeps its models."""
        env: dict[str, str] = {"OLLAMA_HOST": listen}
        if models_dir is not None:
            env["OLLAMA_MODELS"] = models_dir
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

    def role_vars(self) -> dict[str, Any]:
        """The ollama_service role's variables, by the role's own names: the one mapping from inventory to role."""
        return {
            "ollama_service_version": self.ollama_version,
            "ollama_service_archive_url": self.archive_url,
            "ollama_service_sha256": self.ollama_sha256 or "",
            "ollama_service_checksum_url": self.checksum_url or "",
            "ollama_service_models_dir": self.ollama_models_dir,
            "ollama_service_api_url": self.api_url,
            "ollama_service_models": [m.model_dump(by_alias=True, exclude_none=True) for m in self.ollama_models],
            "ollama_service_keep_alive": self.ollama_keep_alive,
        }


class DriverSettings(BaseModel):
    """The host's NVIDIA driver: whether the project may install it, and reboot for it."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    nvidia_driver_install: bool = False
    nvidia_driver_allow_reboot: bool = False

    def role_vars(self) -> dict[str, Any]:
        """The nvidia_host role's variables, by the role's own names (whether to install is preflight's call)."""
        return {"nvidia_host_allow_reboot": self.nvidia_driver_allow_reboot}


_TOKEN_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# Characters a token may hold (base64, base64url, hex, `openssl rand -hex 32`): none of them can break
# out of the proxy's token map, which matches each token exactly (case-sensitively).
_TOKEN_CHARS_RE = re.compile(r"^[A-Za-z0-9._~+/=-]+$")
MIN_TOKEN_LENGTH = 32
_WILDCARDS = ("0.0.0.0", "[::]", "::", "")


def is_loopback(host: str) -> bool:
    """Whether the host part of a HOST:PORT address only listens on this machine."""
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if bare == "localhost":
        return True
    try:
        return ipaddress.ip_address(bare).is_loopback
    except ValueError:
        return False


def _host_port(v: str) -> str:
    host, sep, port = v.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be HOST:PORT like 0.0.0.0:8443 or 192.168.1.20:443")
    return v


class ExposeToken(BaseModel):
    """One client's token: revoked by removing its entry (by name)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    token: SecretStr

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _TOKEN_NAME_RE.match(v):
            raise ValueError("a token's name is letters, digits, '.', '_' and '-' (at most 64), like open-webui")
        return v


class ExposeSettings(BaseModel):
    """Ollama reachable from the network: only behind a TLS proxy that checks a bearer token.

    The proxy runs next to the service where the target runs it (role ollama_proxy, placed by
    the shared service play). Secrets (the tokens, the key file's content) never reach a rendered
    file: the role reads the tokens from the inventory itself, with no_log.
    """

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    ollama_expose_address: str | None = None
    ollama_expose_tls_cert: str | None = None
    ollama_expose_tls_key: str | None = None
    ollama_expose_tokens: list[ExposeToken] = Field(default_factory=list)
    ollama_expose_health_unauthenticated: bool = False
    ollama_listen_unauthenticated: bool = False

    @field_validator("ollama_expose_address")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        return None if v is None else _host_port(v)

    @field_validator("ollama_expose_tls_cert", "ollama_expose_tls_key")
    @classmethod
    def _file(cls, v: str | None) -> str | None:
        if v is None:
            return v
        fields.abs_path(v)
        from pathlib import Path

        if not Path(v).is_file():
            raise ValueError("no such file on the controller (a PEM file, copied to the target)")
        return v

    @field_validator("ollama_expose_tokens", mode="before")
    @classmethod
    def _tokens(cls, v: Any) -> Any:
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(t, dict) for t in v):
            raise ValueError("must be a list of {name, token} entries")
        return v

    @model_validator(mode="after")
    def _checks(self) -> ExposeSettings:
        # Messages name a token by its name, never by its value.
        names = [t.name for t in self.ollama_expose_tokens]
        for name in sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"ollama_expose_tokens: the name {name!r} is used twice; give each client its own name")
        for t in self.ollama_expose_tokens:
            secret = t.token.get_secret_value()
            if len(secret) < MIN_TOKEN_LENGTH:
                raise ValueError(
                    f"ollama_expose_tokens: the token named {t.name!r} has {len(secret)} characters; use at least "
                    f"{MIN_TOKEN_LENGTH} (e.g. `openssl rand -hex 32`) and vault it")
            if not _TOKEN_CHARS_RE.match(secret):
                raise ValueError(
                    f"ollama_expose_tokens: the token named {t.name!r} has characters other than letters, digits "
                    "and ._~+/=-; use e.g. `openssl rand -hex 32`")
        values = [t.token.get_secret_value() for t in self.ollama_expose_tokens]
        if len(set(values)) != len(values):
            raise ValueError("ollama_expose_tokens: two entries have the same token; give each client its own")
        if (self.ollama_expose_tls_cert is None) != (self.ollama_expose_tls_key is None):
            given, missing = (("ollama_expose_tls_cert", "ollama_expose_tls_key") if self.ollama_expose_tls_key is None
                              else ("ollama_expose_tls_key", "ollama_expose_tls_cert"))
            raise ValueError(f"{given} is set without {missing}; set both (a certificate and its key), or neither "
                             "for a self-signed certificate made on the target")
        if self.ollama_expose_address is not None and not self.ollama_expose_tokens:
            raise ValueError(
                "ollama_expose_address is set but ollama_expose_tokens is empty: every request would be refused; "
                "add ollama_expose_tokens: [{name: ..., token: ...}] (vault them), or remove ollama_expose_address")
        return self

    # --- derived values ----------------------------------------------------------------------
    @property
    def exposed(self) -> bool:
        return self.ollama_expose_address is not None

    @property
    def expose_host(self) -> str:
        return (self.ollama_expose_address or "").rpartition(":")[0]

    @property
    def expose_port(self) -> int:
        return int((self.ollama_expose_address or ":0").rpartition(":")[2])

    def role_vars(self, host: str, upstream: str) -> dict[str, Any]:
        """The ollama_proxy role's variables (no secret: the role reads the tokens from the inventory)."""
        host_part = self.expose_host
        bare = host_part[1:-1] if host_part.startswith("[") else host_part
        names = [f"DNS:{host}"]
        if bare not in _WILDCARDS:
            names.append(f"IP:{bare}" if fields.is_ip_address(bare) else f"DNS:{bare}")
        return {
            "ollama_proxy_enabled": True,
            "ollama_proxy_port": self.expose_port,
            "ollama_proxy_check_host": "127.0.0.1" if bare in _WILDCARDS else bare,
            "ollama_proxy_upstream": upstream,
            "ollama_proxy_tls_cert_src": self.ollama_expose_tls_cert or "",
            "ollama_proxy_tls_key_src": self.ollama_expose_tls_key or "",
            "ollama_proxy_tls_common_name": host,
            "ollama_proxy_tls_subject_alt_names": names,
        }


def exposure_problems(settings: HostSettings) -> list[str]:
    """Checks between the listen address and the exposure: no open API without the explicit opt-in."""
    listen, expose = settings.ollama_listen_address, settings.ollama_expose_address
    if expose is not None:
        if not is_loopback(settings.listen_host):
            return [f"ollama_listen_address = {listen!r} with ollama_expose_address = {expose!r}: behind the proxy "
                    "Ollama stays on loopback; set ollama_listen_address to 127.0.0.1:11434 (the default), or remove "
                    "ollama_expose_address"]
        bare = settings.expose_host
        if settings.expose_port == settings.listen_port and (bare in _WILDCARDS or bare == settings.listen_host):
            return [f"ollama_expose_address = {expose!r} takes the port Ollama listens on ({listen}); "
                    "give the proxy another port (e.g. 0.0.0.0:8443)"]
        return []
    if not is_loopback(settings.listen_host) and not settings.ollama_listen_unauthenticated:
        return [f"ollama_listen_address = {listen!r} opens Ollama's API, which has no authentication, to the network; "
                "set ollama_expose_address (HTTPS with tokens, Ollama stays on loopback) and keep "
                "ollama_listen_address on 127.0.0.1, or set ollama_listen_unauthenticated: true to accept an open API"]
    return []


SHARED_CONCERNS: tuple[type[BaseModel], ...] = (OllamaSettings, DriverSettings, ExposeSettings)


def _all_concerns() -> tuple[type[BaseModel], ...]:
    seen: list[type[BaseModel]] = list(SHARED_CONCERNS)
    for module in targets.MODULES.values():
        seen.extend(m for m in module.settings_models if m not in seen)
    return tuple(seen)


CONCERNS = _all_concerns()


class HostSettings:
    """Every setting of one host: its identity plus one validated model per concern.

    ``host`` and ``target`` come from where the host sits in the inventory, ``address``
    from its ``ansible_host``. Each flat inventory name reads through to its concern
    (``settings.lxc_vmid``), and so does each concern's derived value and each value the host's
    target derives across concerns (TargetModule.derived).
    """

    def __init__(self, host: str, target: Target, address: str | None, concerns: tuple[BaseModel, ...]) -> None:
        self.host = host
        self.target = Target(target)
        self.address = address
        self.concerns = concerns
        self.module = targets.get(self.target)

    def __getattr__(self, name: str) -> Any:
        # Only a concern's fields (the inventory's names) and its derived values (properties):
        # never pydantic's own methods.
        if name.startswith("_") or name == "concerns":
            raise AttributeError(name)
        for concern in self.concerns:
            if name in type(concern).model_fields or isinstance(getattr(type(concern), name, None), property):
                return getattr(concern, name)
        if name in self.module.derived:
            return self.module.derived[name](self)
        raise AttributeError(f"{self!r} has no setting or derived value {name!r}")

    def __repr__(self) -> str:
        return f"HostSettings(host={self.host!r}, target={self.target.value!r})"

    def concern(self, model: type[BaseModel]) -> Any:
        return next(c for c in self.concerns if isinstance(c, model))

    @property
    def ollama(self) -> OllamaSettings:
        return self.concern(OllamaSettings)

    @property
    def driver(self) -> DriverSettings:
        return self.concern(DriverSettings)

    @property
    def expose(self) -> ExposeSettings:
        return self.concern(ExposeSettings)

    @property
    def warnings(self) -> list[str]:
        """Lines printed on every run: settings that are allowed but unsafe."""
        if self.ollama_listen_unauthenticated and not self.expose.exposed and not is_loopback(self.listen_host):
            return [f"warning: {self.host}: Ollama listens on {self.ollama_listen_address} without authentication "
                    "(ollama_listen_unauthenticated: true): anyone who reaches that address can use and change "
                    "the server; set ollama_expose_address to put it behind TLS and tokens"]
        return []

    @property
    def ollama_environment(self) -> dict[str, str]:
        """The server's environment, in one place for the drop-in and the compose file alike."""
        return self.module.server_environment(self)

    def public_dict(self) -> dict[str, Any]:
        """All settings as plain data, secrets masked: safe to print or log."""
        data: dict[str, Any] = {"host": self.host, "target": self.target.value, "address": self.address}
        for concern in self.concerns:
            for name, value in concern.model_dump(mode="json", by_alias=True).items():
                data[name] = "********" if isinstance(getattr(concern, name), SecretStr) else value
        return data


def _declared_once() -> frozenset[str]:
    names: dict[str, str] = {}
    for model in CONCERNS:
        for name in [*model.model_fields, *(n for n, v in vars(model).items() if isinstance(v, property))]:
            if names.setdefault(name, model.__name__) != model.__name__:
                raise TypeError(f"{name} is declared by both {names[name]} and {model.__name__}")
    return frozenset(n for model in CONCERNS for n in model.model_fields)


# Every inventory variable, each declared by exactly one concern (a name in two would be ambiguous).
KNOWN_VARIABLES = _declared_once()
# Variables the user may set start with one of these (ollama_, nvidia_, lxc_, ...); an unknown one is a typo.
USER_PREFIXES = tuple(sorted({name.split("_", 1)[0] + "_" for name in KNOWN_VARIABLES}))


@cache
def _role_prefixes() -> tuple[str, ...]:
    """A role's own public variables (role name + "_") are the role's business, not the inventory's."""
    from . import resources

    return tuple(sorted(f"{p.name}_" for p in resources.roles_dir().iterdir() if (p / "tasks").is_dir()))


def unknown_variables(variables: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Variables with one of our prefixes that no setting declares, each with a close match."""
    found = []
    for name in sorted(variables):
        if not name.startswith(USER_PREFIXES) or name in KNOWN_VARIABLES:
            continue
        if name.startswith(_role_prefixes()) or name.startswith("__"):
            continue
        close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1, cutoff=0.75)
        found.append((name, close[0] if close else None))
    return found


def _is_secret(annotation: Any) -> bool:
    text = repr(annotation)
    return "SecretStr" in text or "ExposeToken" in text


# Variables whose values are never echoed in an error (the value shown is ********).
SECRET_VARIABLES = frozenset(
    name for model in CONCERNS for name, f in model.model_fields.items() if _is_secret(f.annotation))


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
        value = "********" if variable in SECRET_VARIABLES else err.get("input")
        lines.append(f"host {host!r}: {variable}{where} = {_short(value)}: {msg}")
    return lines


def build_settings(host: str, target: Target, variables: dict[str, Any],
                   address: str | None = None) -> HostSettings:
    """Validate one host's merged variables; raise SettingsError with one line per problem."""
    problems = []
    for name, close in unknown_variables(variables):
        hint = f"; did you mean {close}?" if close else "; see the inventory reference in README.md"
        problems.append(f"host {host!r}: unknown variable {name}{hint}")
    concerns: list[BaseModel] = []
    for model in CONCERNS:
        try:
            concerns.append(model.model_validate(variables))
        except ValidationError as exc:
            problems.extend(format_validation_error(host, exc))
    if problems:
        raise SettingsError(problems[0], details=problems[1:])
    settings = HostSettings(host, target, address, tuple(concerns))
    problems = [f"host {host!r}: {line}"
                for line in [*exposure_problems(settings), *settings.module.check_settings(settings)]]
    if problems:
        raise SettingsError(problems[0], details=problems[1:])
    return settings
