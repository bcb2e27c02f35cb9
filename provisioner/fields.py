"""Value rules shared by every settings concern: versions, paths, host names, PCI addresses.

Each returns the normalised value or raises ``ValueError`` with the text a person
reads after ``host 'x': variable = value:`` (see settings.format_validation_error).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

_VERSION_RE = re.compile(r"^v?(\d+)\.(\d+)\.(\d+)([-+][0-9A-Za-z.+-]+)?$")
_HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
_PCI_RE = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


def parse_version(text: str) -> tuple[int, int, int]:
    m = _VERSION_RE.match(text)
    if not m:
        raise ValueError(f"{text!r} is not a version like 0.12.3")
    return int(m[1]), int(m[2]), int(m[3])


def abs_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path (starting with /), not {value!r}")
    return value.rstrip("/") or "/"


def hostname(value: str) -> str:
    if not _HOSTNAME_RE.match(value):
        raise ValueError("must be a host name: lower-case letters, digits and '-', at most 63 characters")
    return value


def pci_addresses(value: Any) -> list[str]:
    """Full PCI addresses (0000:01:00.0), lower case, each once."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    out: list[str] = []
    for addr in value:
        a = str(addr).lower()
        if not _PCI_RE.match(a):
            raise ValueError(f"{addr!r} is not a full PCI address like 0000:01:00.0 (domain:bus:slot.function)")
        if a in out:
            raise ValueError(f"{a} is listed twice")
        out.append(a)
    return out


def is_ip_address(host: str) -> bool:
    """Whether the host part of a HOST:PORT address (IPv6 in brackets or not) is an IP address."""
    try:
        ipaddress.ip_address(host[1:-1] if host.startswith("[") and host.endswith("]") else host)
    except ValueError:
        return False
    return True
