"""The whole flow of DESIGN.md for one target: validate -> discover -> preflight -> render -> apply -> verify.

Usable from Python without the CLI; ``echo`` receives one progress line per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import inventory as inv
from .errors import NotBuiltYet
from .facts import load_facts
from .render import HostRender, render
from .judge import Verdict
from .runner import RunResult, run_playbook
from .settings import HostSettings
from .targets import Target, TargetSpec, spec

Echo = Callable[[str], None]


@dataclass
class FlowResult:
    target: Target
    renders: list[HostRender]
    run: RunResult | None = None
    cpu_only_hosts: list[str] = field(default_factory=list)
    verdicts: list = field(default_factory=list)


def _extravars(tspec: TargetSpec, rendered: Path, **more: object) -> dict[str, object]:
    return {"provision_group": tspec.group, "provision_rendered_dir": str(rendered.resolve()), **more}


def run_flow(*, target: Target, inventory: Path, limit: str | None, out: Path,
             check: bool = False, diff: bool = False, facts: Path | None = None,
             state_dir: Path = Path(".provision"), echo: Echo = print) -> FlowResult:
    """Validate, discover, preflight, render and apply ``target`` on the inventory's hosts.

    ``facts`` skips discovery and uses that directory of <host>.json instead.
    """
    from .discover import discover
    from .preflight import preflight

    tspec = spec(target)
    loaded = inv.load(inventory, target, limit)
    echo(f"validated {len(loaded.hosts)} host(s) of target {target}: {', '.join(h.host for h in loaded.hosts)}")
    rendered = out / target.value
    checked = []
    if tspec.apply_ready:  # a target that cannot be applied yet is only rendered, offline
        if facts is None:
            echo("discover: reading each host's GPU, driver and device facts (read-only)")
            facts = state_dir / "facts"
            discover(inventory, target, facts, limit=limit, echo=echo, runs_dir=state_dir / "runs")
        checked = preflight([(s, load_facts(facts, s.host, s.kvm_gpu_pci_addresses)) for s in loaded.hosts])
        for p in checked:
            for note in p.notes:
                echo(f"preflight: {note}")
    renders = render(loaded.hosts, rendered, facts)
    for r in renders:
        echo(f"rendered {len(r.files)} files for {r.host} in {r.directory}")
    if not tspec.apply_ready:
        raise NotBuiltYet(
            f"applying target {target} is not built in this version; the files are rendered in "
            f"{rendered} for review (nothing on any host was changed)"
        )
    driver_hosts = [p.host for p in checked if p.install_driver]
    run = run_playbook(tspec.playbook, inventory, limit=limit, check=check, diff=diff, echo=echo,
                       runs_dir=state_dir / "runs",
                       extravars=_extravars(tspec, rendered, provision_driver_hosts=driver_hosts))
    for s in loaded.hosts:
        echo(f"{'would change' if check else 'changed'} {run.changed(s.host)} thing(s) on {s.host}")
        if not check:  # the role's health check waited for exactly this answer
            echo(f"{s.host}: Ollama {s.ollama_version} answers at {s.api_url} (on that host, "
                 f"listening on {s.ollama_listen_address})")
    result = FlowResult(target, renders, run, [p.host for p in checked if p.cpu_only])
    if check:
        echo("verify: skipped in a dry run (nothing was installed)")
        return result
    expect = {h: "cpu" for h in result.cpu_only_hosts}
    result.verdicts = verify_target(loaded.hosts, inventory, target, limit=limit, expect=expect,
                                    facts=facts, state_dir=state_dir, echo=echo)
    return result


def verify_target(hosts: list[HostSettings], inventory: Path, target: Target, *, limit: str | None,
                  model: str | None = None, expect: dict[str, str] | None = None, facts: Path | None = None,
                  state_dir: Path = Path(".provision"), echo: Echo = print) -> list[Verdict]:
    """Gather evidence on each host through Ansible and judge it: one verdict per host.

    The model is ``model`` or the host's first of ``ollama_models``; a host with neither gets an
    ``error`` verdict saying so. ``expect`` maps a host to a verdict that counts as a pass there.
    """
    from .judge import judge
    from .verify import gather_ansible

    expect = expect or {}
    plan = {s.host: {"model": model or s.ollama_models[0].name, "api_url": s.api_url}
            for s in hosts if model or s.ollama_models}
    evidence = gather_ansible(inventory, target.value, plan, limit=limit, runs_dir=state_dir / "runs", echo=echo) \
        if plan else {}
    verdicts = []
    for s in hosts:
        doc = evidence.get(s.host) or {"host": s.host, "target": target.value, "error": (
            f"no model to verify on {s.host}: set ollama_models or pass --model" if s.host not in plan
            else f"no evidence came back from {s.host}")}
        doc["settings"] = {"context_length": s.ollama_context_length, "num_parallel": s.ollama_num_parallel,
                           "kv_cache_type": s.ollama_kv_cache_type}
        if facts is not None and (facts / f"{s.host}.json").exists():
            doc["host_driver_version"] = load_facts(facts, s.host).nvidia_driver_version
        verdicts.append(judge(doc, expect=expect.get(s.host)))
    return verdicts


def run_uninstall(*, target: Target, inventory: Path, limit: str | None, out: Path, purge: bool = False,
                  check: bool = False, state_dir: Path = Path(".provision"), echo: Echo = print) -> RunResult:
    """Remove the service, unit and binaries from the target's hosts; models stay unless ``purge``."""
    tspec = spec(target)
    loaded = inv.load(inventory, target, limit)
    if not tspec.apply_ready:
        raise NotBuiltYet(f"uninstalling target {target} is not built in this version (nothing was changed)")
    rendered = out / target.value
    render(loaded.hosts, rendered, None)  # the playbook reads each host's paths (models dir) from the manifest
    run = run_playbook(tspec.playbook, inventory, limit=limit, check=check, echo=echo, runs_dir=state_dir / "runs",
                       extravars=_extravars(tspec, rendered, provision_state="absent", provision_purge=purge))
    kept = "models, the ollama user and their data were removed too" if purge else \
        "the models directory and the ollama user were kept (--purge removes them)"
    for s in loaded.hosts:
        echo(f"{'would remove' if check else 'removed'} Ollama from {s.host}: {run.changed(s.host)} change(s); {kept}")
    return run



def discovered_vram(target: Target, inventory: Path, facts: Path | None = None, *,
                    state_dir: Path = Path(".provision"), echo: Echo = print) -> dict[str, float]:
    """GPU memory in GiB per host (the smallest card of each) from discovered facts; 0 without a GPU.

    ``facts`` is a directory of <host>.json; without it the hosts are discovered first (read-only).
    """
    from .discover import discover

    loaded = inv.load(inventory, target, None)
    if facts is None:
        facts = state_dir / "facts"
        discover(inventory, target, facts, echo=echo, runs_dir=state_dir / "runs")
    out = {}
    for s in loaded.hosts:
        found = load_facts(facts, s.host)
        sizes = [g.memory_total_mib for g in found.gpus if g.memory_total_mib] if found.source == "discovered" else []
        out[s.host] = round(min(sizes) / 1024, 1) if sizes else 0.0
    return out
