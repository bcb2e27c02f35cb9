"""Render every configuration file a target needs, per host, into a directory a person can read.

Layout of the output, for each host::

    OUT/<host>/host/...     files for the machine in the inventory, at the path they land on
    OUT/<host>/guest/...    files inside the container or VM the host carries
    OUT/<host>/manifest.json  what each file is, where it goes and how it is applied

Rendering is pure: it reads settings and facts and writes only under OUT.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import __version__
from .errors import RenderError
from .facts import NVIDIA_MAJOR, HostFacts, load_facts
from .settings import HostSettings
from .targets import TEMPLATES_DIR, FileSpec, Target, spec

MANAGED = (
    "Managed by ollama-provisioner (`provision render`). Local changes are overwritten\n"
    "on the next run: change the inventory instead."
)


@dataclass
class RenderedFile:
    path: Path  # where it was written, under OUT/<host>/
    scope: str
    dest: str
    method: str
    mode: str
    sha256: str


@dataclass
class HostRender:
    host: str
    target: Target
    directory: Path
    files: list[RenderedFile]
    facts_source: str
    assumptions: list[str]
    notes: list[str] = field(default_factory=list)


class _Attrs(dict):
    """``str.format_map`` over the attributes of a settings object."""

    def __init__(self, settings: HostSettings) -> None:
        super().__init__()
        self._s = settings

    def __missing__(self, key: str) -> Any:
        return getattr(self._s, key)


def _comment(text: str, prefix: str = "# ") -> str:
    return "\n".join((prefix + line).rstrip() for line in text.splitlines())


def _systemd_quote(value: str) -> str:
    """A value for Environment="K=V": backslash and double quote escaped, % doubled."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")


def _xml(value: Any) -> str:
    from markupsafe import escape

    return str(escape(str(value)))


@lru_cache(maxsize=1)
def _environment():  # jinja2 is imported on first render, not at CLI start-up
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters["comment"] = _comment
    env.filters["systemd_quote"] = _systemd_quote
    env.filters["xml"] = _xml
    env.filters["to_nice_json"] = lambda v: json.dumps(v, indent=2, sort_keys=False)
    return env


# --- values derived from settings and facts ------------------------------------------


def passthrough_style(settings: HostSettings, facts: HostFacts) -> str:
    """devN entries on Proxmox VE >= 8.1, raw lxc.* lines otherwise."""
    if settings.lxc_passthrough != "auto":
        return settings.lxc_passthrough
    if settings.lxc_backend != "proxmox":
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


def context(settings: HostSettings, facts: HostFacts) -> dict[str, Any]:
    style = passthrough_style(settings, facts) if settings.target is Target.lxc else None
    devs = hostdevs(settings, facts)
    return {
        "s": settings,
        "f": facts,
        "host": settings.host,
        "target": settings.target.value,
        "managed": MANAGED,
        "provisioner_version": __version__,
        "env": settings.ollama_environment,
        "passthrough_style": style,
        "gpu_majors": gpu_majors(facts),
        "gpu_mounts": gpu_mounts(facts),
        "gpu_nodes": facts.nvidia_device_nodes,
        "video_gid": facts.group_gids.get("video", 44),
        "hostdevs": devs,
        "vfio_ids": sorted({d["ids"] for d in devs if d["ids"]}),
        "has_audio_function": any(not d["address"].endswith(".0") for d in devs),
        "iommu": iommu_vendor(settings, facts),
        "read_write_paths": sorted({"/usr/share/ollama", settings.ollama_models_dir}),
        "models_in_home": settings.ollama_models_dir.startswith(("/home/", "/root/", "/run/user/")),
    }


def conditions(settings: HostSettings, ctx: dict[str, Any]) -> dict[str, bool]:
    return {
        "is_plain_lxc": settings.is_plain_lxc,
        "is_proxmox": settings.is_proxmox,
        "proxmox_raw": settings.is_proxmox and ctx["passthrough_style"] == "raw",
    }


# --- safety checks on rendered output ---------------------------------------------------

_ROOTFS_RE = re.compile(r"^\s*lxc\.rootfs\.path\s*=\s*(?:dir:)?(\S+)\s*$", re.MULTILINE)


def check_lxc_config(text: str, source: str = "LXC config") -> None:
    """Refuse an LXC config without a container root: LXC would boot the host's own /."""
    m = _ROOTFS_RE.search(text)
    if not m or m.group(1) in ("/", ""):
        raise RenderError(
            f"{source} has no lxc.rootfs.path of its own; LXC would boot the host's / as the "
            "container. Refusing to write it."
        )


# --- systemd-analyze security -----------------------------------------------------------


@lru_cache(maxsize=32)
def _exposure(unit: str, dropin: str) -> str | None:
    """``systemd-analyze security --offline`` of the unit plus drop-in, e.g. '2.9 OK'."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory() as root:
        unit_dir = Path(root, "etc/systemd/system")
        (unit_dir / "ollama.service.d").mkdir(parents=True)
        (unit_dir / "ollama.service").write_text(unit)
        (unit_dir / "ollama.service.d/override.conf").write_text(dropin)
        proc = subprocess.run(
            [tool, "security", "--offline=yes", f"--root={root}", "--no-pager", "ollama.service"],
            capture_output=True, text=True, check=False,
        )
    m = re.search(r"Overall exposure level for ollama\.service:\s*([\d.]+)\s+(\w+)", proc.stdout)
    return f"{m.group(1)} {m.group(2)}" if m else None


def _without_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", ";"))) + "\n"


def security_exposure(unit: str, dropin: str) -> str | None:
    """Computed once per distinct unit + drop-in: comments (which name the host) never change it."""
    return _exposure(_without_comments(unit), _without_comments(dropin))


# --- the renderer -------------------------------------------------------------------------


def used_assumptions(settings: HostSettings, facts: HostFacts) -> list[str]:
    """The assumptions this host's files actually rest on."""
    used = set(spec(settings.target).facts_used)
    if settings.is_plain_lxc:
        used -= {"proxmox", "gids"}
    elif settings.is_proxmox:
        used -= {"cgroup"} if passthrough_style(settings, facts) == "devN" else set()
    return [text for topic, text in facts.assumptions if topic in used]


def _render_one(fs: FileSpec, ctx: dict[str, Any]) -> str:
    import jinja2

    try:
        return _environment().get_template(fs.template).render(ctx)
    except jinja2.TemplateError as exc:
        where = getattr(exc, "lineno", None)
        raise RenderError(f"template {fs.template}{f':{where}' if where else ''}: {exc}") from None


def render_host(settings: HostSettings, facts: HostFacts, out_dir: Path) -> HostRender:
    tspec = spec(settings.target)
    ctx = context(settings, facts)
    cond = conditions(settings, ctx)
    attrs = _Attrs(settings)
    host_dir = out_dir / settings.host
    rendered: list[tuple[FileSpec, str, str, Path]] = []
    for fs in tspec.files:
        if fs.when and not cond[fs.when]:
            continue
        text = _render_one(fs, ctx)
        dest = fs.dest.format_map(attrs)
        rel = Path(fs.scope) / fs.out_path.format_map(attrs).lstrip("/")
        if fs.template == "lxc/config.j2":
            check_lxc_config(text, f"{settings.host}: {dest}")
        rendered.append((fs, text, dest, rel))

    # Only write once every file rendered: a failure leaves no half-written host directory.
    if host_dir.exists():
        shutil.rmtree(host_dir)
    files = []
    for fs, text, dest, rel in rendered:
        path = host_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        files.append(RenderedFile(
            path=path, scope=fs.scope, dest=dest, method=fs.method, mode=fs.mode,
            sha256=hashlib.sha256(text.encode()).hexdigest(),
        ))

    notes = []
    if settings.target is Target.native:
        texts = {fs.template: text for fs, text, _, _ in rendered}
        exposure = security_exposure(texts["common/ollama.service.j2"], texts["common/override.conf.j2"])
        if exposure:
            notes.append(f"systemd-analyze security exposure of ollama.service: {exposure}")
    if ctx["passthrough_style"]:
        notes.append(f"LXC GPU passthrough style: {ctx['passthrough_style']}")

    result = HostRender(
        host=settings.host, target=settings.target, directory=host_dir, files=files,
        facts_source=facts.source, assumptions=used_assumptions(settings, facts), notes=notes,
    )
    _write_manifest(result, settings)
    return result


def _write_manifest(result: HostRender, settings: HostSettings) -> None:
    manifest = {
        "provisioner_version": __version__,
        "host": result.host,
        "target": result.target.value,
        "facts": result.facts_source,
        "assumptions": result.assumptions,
        "notes": result.notes,
        "files": [
            {
                "path": str(f.path.relative_to(result.directory)),
                "scope": f.scope,
                "dest": f.dest,
                "method": f.method,
                "mode": f.mode,
                "sha256": f.sha256,
            }
            for f in result.files
        ],
        "settings": settings.public_dict(),
        "install": settings.service_install(),
    }
    (result.directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def render(hosts: list[HostSettings], out_dir: Path, facts_dir: Path | None = None) -> list[HostRender]:
    """Render every host; each host's facts are read from ``facts_dir`` or assumed."""
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        render_host(s, load_facts(facts_dir, s.host, s.kvm_gpu_pci_addresses), out_dir)
        for s in hosts
    ]
