"""Render every configuration file a target needs, per host, into a directory a person can read.

Layout of the output, for each host::

    OUT/<host>/host/...     files for the machine in the inventory, at the path they land on
    OUT/<host>/guest/...    files inside the container or VM the host carries
    OUT/<host>/manifest.json  what each file is, where it goes and how it is applied
    OUT/<host>/host-vars.json     role variables of the play on the host (by the roles' own names)
    OUT/<host>/service-vars.json  role variables of the shared service play where Ollama runs

What differs between targets (files, context, checks, notes) comes from the target's
module (provisioner/targets/). Rendering is pure: it reads settings and facts and writes
only under OUT.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from . import __version__, resources
from .errors import RenderError
from .facts import HostFacts, load_hosts_facts
from .preflight import HostPreflight
from .settings import HostSettings
from .targets import FileSpec, Target
from .targets.base import EXPOSED

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
        loader=jinja2.FileSystemLoader(str(resources.templates_dir())),
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


# --- the renderer -------------------------------------------------------------------------


def base_context(settings: HostSettings, facts: HostFacts) -> dict[str, Any]:
    """Template values every target has; the target's module adds its own (TargetModule.context)."""
    return {
        "s": settings,
        "f": facts,
        "host": settings.host,
        "target": settings.target.value,
        "managed": MANAGED,
        "provisioner_version": __version__,
        "env": settings.ollama_environment,
        "proxy_listen": settings.module.proxy_listen(settings),
        "read_write_paths": sorted({"/usr/share/ollama", settings.ollama_models_dir}),
        "models_in_home": settings.ollama_models_dir.startswith(("/home/", "/root/", "/run/user/")),
    }


def used_assumptions(settings: HostSettings, facts: HostFacts) -> list[str]:
    """The assumptions this host's files actually rest on."""
    used = settings.module.fact_topics(settings, facts)
    return [text for topic, text in facts.assumptions if topic in used]


def _render_one(fs: FileSpec, ctx: dict[str, Any]) -> str:
    import jinja2

    try:
        return _environment().get_template(fs.template).render(ctx)
    except jinja2.TemplateError as exc:
        where = getattr(exc, "lineno", None)
        raise RenderError(f"template {fs.template}{f':{where}' if where else ''}: {exc}") from None


def write_role_vars(settings: HostSettings, host_dir: Path, checked: HostPreflight | None) -> list[str]:
    """host-vars.json and service-vars.json: the roles' variables for this host, by the roles' names;
    the names of the files written.

    ``checked`` is preflight's result for the host (whether its driver is installed on this run,
    whether it has a GPU); None when preflight did not run (`provision render`, uninstall).
    """
    module = settings.module
    docs = {
        "host-vars.json": module.host_vars(settings, checked),
        "service-vars.json": module.service_vars(settings),
    }
    host_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (host_dir / name).write_text(json.dumps(doc, indent=2) + "\n")
    return list(docs)


def render_host(settings: HostSettings, facts: HostFacts, out_dir: Path, *,
                checked: HostPreflight | None = None) -> HostRender:
    module = settings.module
    ctx = {**base_context(settings, facts), **module.context(settings, facts)}
    cond = {EXPOSED: settings.expose.exposed, **module.conditions(settings, facts)}
    attrs = _Attrs(settings)
    host_dir = out_dir / settings.host
    rendered: list[tuple[FileSpec, str, str, Path]] = []
    for fs in module.files:
        if fs.when and not cond[fs.when]:
            continue
        text = _render_one(fs, ctx)
        dest = fs.dest.format_map(attrs)
        rel = Path(fs.scope) / fs.out_path.format_map(attrs).lstrip("/")
        module.check_rendered(fs, text, f"{settings.host}: {dest}")
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
    texts: Mapping[str, str] = {fs.template: text for fs, text, _, _ in rendered}
    result = HostRender(
        host=settings.host, target=settings.target, directory=host_dir, files=files,
        facts_source=facts.source, assumptions=used_assumptions(settings, facts),
        notes=module.render_notes(settings, facts, texts),
    )
    _write_manifest(result, settings, write_role_vars(settings, host_dir, checked))
    return result


def _write_manifest(result: HostRender, settings: HostSettings, role_vars: list[str]) -> None:
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
        "place": settings.module.place(settings).to_dict(),
        "settings": settings.public_dict(),
        "role_vars": role_vars,
    }
    (result.directory / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def render(hosts: list[HostSettings], out_dir: Path, facts_dir: Path | None = None, *,
           facts: Mapping[str, HostFacts] | None = None,
           checked: Mapping[str, HostPreflight] | None = None) -> list[HostRender]:
    """Render every host. Facts come from ``facts`` (read once by the caller), else ``facts_dir``, else assumed.

    ``checked``: preflight's result per host, when it ran (its decisions go to host-vars.json).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    facts = facts if facts is not None else load_hosts_facts(facts_dir, hosts)
    checked = checked or {}
    return [render_host(s, facts[s.host], out_dir, checked=checked.get(s.host)) for s in hosts]
