"""The whole flow of DESIGN.md for one target: validate -> discover -> preflight -> render -> apply -> verify.

Usable from Python without the CLI. Every step works on the same objects: the hosts'
settings (the inventory parsed once), their facts (read once per host), one
``Workspace`` and one ``Runner`` (the only way Ansible runs, replaced by a fake in the
tests). The result is one ``FlowResult`` with a ``HostResult`` per host; when a step
fails, the ``ProvisionError`` carries the result so far as ``error.result``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

from . import inventory as inv
from .errors import ApplyError, NotBuiltYet, ProvisionError
from .evidence import Evidence, ServerTuning
from .facts import HostFacts, load_hosts_facts
from .judge import Verdict
from .preflight import HostPreflight
from .progress import Display
from .render import render, write_role_vars
from .runner import AnsibleRunner, Runner, RunResult, host_limit, playbook_vars
from .settings import HostSettings
from .targets import Target
from .verify import ExposureCheck
from .workspace import Workspace


@dataclass
class HostError:
    host: str
    task: str
    message: str


@dataclass
class HostResult:
    """What happened on one host: the parts of the documented --json output."""

    host: str
    target: str
    validated: bool = True
    preflight: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    changes: int | None = None
    # Where Ollama runs for this host (TargetModule.place) and where it answered the health check.
    place: str | None = None
    answers_at: str | None = None
    verdict: Verdict | None = None
    # The exposure check through the proxy (verify.ExposureCheck), for an exposed host.
    exposure: ExposureCheck | None = None
    errors: list[HostError] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["verdict"] = self.verdict.to_dict() if self.verdict else None
        data["exposure"] = self.exposure.to_dict() if self.exposure else None
        return data


@dataclass
class FlowResult:
    command: str
    target: Target
    check: bool = False
    hosts: list[HostResult] = field(default_factory=list)
    # The steps that ran, in order: validate, discover, preflight, render, apply, verify.
    steps: list[str] = field(default_factory=list)
    run_dirs: list[str] = field(default_factory=list)
    # The first line of the error that stopped the run, and its further lines (one per problem).
    error: str | None = None
    details: list[str] = field(default_factory=list)
    # What the roles asked to be told (a reboot needed, a file kept), printed after the run.
    notes: list[str] = field(default_factory=list)
    exit_code: int = 0

    def host(self, name: str) -> HostResult:
        return next(h for h in self.hosts if h.host == name)

    @property
    def verdicts(self) -> list[Verdict]:
        return [h.verdict for h in self.hosts if h.verdict is not None]

    def to_dict(self) -> dict[str, Any]:
        return {
            "command": self.command, "target": self.target.value, "check": self.check, "steps": self.steps,
            "exit_code": self.exit_code, "error": self.error, "details": self.details, "notes": self.notes,
            "run_dirs": self.run_dirs,
            "hosts": [h.to_dict() for h in self.hosts],
        }


def _owners(hosts: list[HostSettings]) -> dict[str, str]:
    """Each name a run may report (a host, or the place where it runs Ollama) -> the inventory host."""
    owners = {s.host: s.host for s in hosts}
    owners.update({s.module.place(s).name: s.host for s in hosts})
    return owners


def _record_changes(result: FlowResult, run: RunResult, hosts: list[HostSettings]) -> None:
    """Each host's changes: on the host itself and at its place (the service play runs there)."""
    changes = dict.fromkeys((h.host for h in result.hosts), 0)
    for name, owner in _owners(hosts).items():  # a place that is the host itself is one name
        changes[owner] += run.changed(name)
    for host in result.hosts:
        host.changes = changes[host.host]


def _failed(result: FlowResult, exc: ProvisionError, hosts: list[HostSettings], runner: Runner | None) -> ProvisionError:
    """Record ``exc`` in the result (each failure under the host it belongs to) and attach the result to it."""
    result.error = exc.message
    result.details = list(exc.details)
    result.exit_code = exc.exit_code
    if runner is not None:
        result.run_dirs = [str(d) for d in runner.run_dirs]
    if isinstance(exc, ApplyError):
        owners = _owners(hosts)
        for f in exc.failures:
            if f.host in owners:
                result.host(owners[f.host]).errors.append(HostError(owners[f.host], f.task, f.message))
        if exc.run is not None:
            _record_changes(result, exc.run, hosts)
    exc.result = result
    return exc


def _not_applicable(hosts: list[HostSettings]) -> HostSettings | None:
    """The first host that cannot be applied in this version (its target or backend is render-only)."""
    return next((s for s in hosts if not s.module.applies(s)), None)


def _load(command: str, target: Target, inventory: Path, limit: str | None) -> tuple[FlowResult, list[HostSettings]]:
    """The hosts of ``target``, validated; a failure carries an empty result (nothing was touched)."""
    result = FlowResult(command, Target(target))
    try:
        hosts = inv.load(inventory, target, limit).hosts
    except ProvisionError as exc:
        raise _failed(result, exc, [], None) from None
    result.hosts = [HostResult(s.host, s.target.value) for s in hosts]
    result.steps.append("validate")
    return result, hosts


def run_flow(*, target: Target, inventory: Path, limit: str | None = None, workspace: Workspace,
             check: bool = False, diff: bool = False, facts_given: bool = False,
             display: Display, runner: Runner | None = None) -> FlowResult:
    """Validate, discover, preflight, render, apply and verify ``target`` on the inventory's hosts.

    ``facts_given``: the workspace's facts directory was given (--facts): discovery is skipped.
    """
    from .discover import discover
    from .preflight import check as preflight_check
    from .preflight import refuse

    result, hosts = _load("provision", target, inventory, limit)
    result.check = check
    module = hosts[0].module
    display.line(f"validated {len(hosts)} host(s) of target {target}: {', '.join(h.host for h in hosts)}")
    for s in hosts:
        for warning in s.warnings:
            display.line(warning)
    runner = runner or AnsibleRunner(workspace, inventory, display)
    rendered = workspace.rendered(module.name)
    blocked = _not_applicable(hosts)
    try:
        checked: dict[str, HostPreflight] = {}
        cpu_only: set[str] = set()
        if blocked is None:  # what cannot be applied yet is only rendered, offline
            if not facts_given:
                display.line("discover: reading each host's GPU, driver and device facts (read-only)")
                discover(workspace, runner, hosts, limit=limit)
                result.steps.append("discover")
            facts = load_hosts_facts(workspace.facts, hosts)
            for p in preflight_check([(s, facts[s.host]) for s in hosts]):
                result.host(p.host).preflight = [*p.notes, *p.problems]
                checked[p.host] = p
                if p.cpu_only:
                    cpu_only.add(p.host)
                for note in p.notes:
                    display.line(f"preflight: {note}")
            refuse(list(checked.values()))
            result.steps.append("preflight")
        else:
            facts = load_hosts_facts(workspace.facts if facts_given else None, hosts)
        for r in render(hosts, rendered, facts=facts, checked=checked):
            result.host(r.host).files = [str(f.path) for f in r.files]
            display.line(f"rendered {len(r.files)} files for {r.host} in {r.directory}")
        result.steps.append("render")
        if blocked is not None:
            raise NotBuiltYet(module.not_built("apply", str(rendered), blocked))

        run = runner.run(module.playbook, limit=host_limit(hosts, limit), check=check, diff=diff,
                         extravars=playbook_vars(hosts, provision_rendered_dir=str(rendered.resolve())))
        result.steps.append("apply")
        result.notes = run.notes
        _record_changes(result, run, hosts)
        for s in hosts:
            host = result.host(s.host)
            host.place = module.place(s).description
            display.line(f"{'would change' if check else 'changed'} {host.changes} thing(s) on {s.host}")
            if not check:  # the role's health check waited for exactly this answer
                host.answers_at = s.api_url
                display.line(f"{s.host}: Ollama {s.ollama_version} answers at {s.api_url} (on {host.place}, "
                             f"listening on {s.ollama_listen_address})")
        if check:
            display.line("verify: skipped in a dry run (nothing was installed)")
        else:
            exposures: dict[str, ExposureCheck] = {}
            verdicts = verify_target(hosts, workspace, runner, limit=limit, facts=facts,
                                     expect={h: "cpu" for h in cpu_only}, exposures=exposures)
            result.steps.append("verify")
            for v in verdicts:
                result.host(v.host).verdict = v
            for host, checked_exposure in exposures.items():
                result.host(host).exposure = checked_exposure
            result.exit_code = max([v.exit_code for v in verdicts] + [e.exit_code for e in exposures.values()])
        result.run_dirs = [str(d) for d in runner.run_dirs]
        return result
    except ProvisionError as exc:
        raise _failed(result, exc, hosts, runner) from None


def verify_target(hosts: list[HostSettings], workspace: Workspace, runner: Runner, *, limit: str | None,
                  model: str | None = None, expect: Mapping[str, str] | None = None,
                  facts: Mapping[str, HostFacts] | None = None,
                  exposures: dict[str, ExposureCheck] | None = None) -> list[Verdict]:
    """Gather evidence where each host's Ollama runs, through Ansible, and judge it: one verdict per host.

    The model is ``model`` or the host's first of ``ollama_models``; a host with neither gets an
    ``error`` verdict saying so. ``expect`` maps a host to a verdict that counts as a pass there.
    ``facts`` (discovered) add the host's kernel driver version, which a container's may differ from.
    Each exposed host's proxy is checked from here (verify.check_exposure) into ``exposures`` when
    given, its lines shown as they come.
    """
    from .judge import judge
    from .verify import gather_ansible

    module = hosts[0].module
    blocked = _not_applicable(hosts)
    if blocked is not None:  # its place does not exist yet: nothing to reach
        raise NotBuiltYet(module.not_built("verifying", settings=blocked))
    expect = expect or {}
    plan = {s.host: {"model": model or s.ollama_models[0].name, "api_url": s.api_url,
                     "num_predict": s.ollama_verify_tokens}
            for s in hosts if model or s.ollama_models}
    proxies: dict[str, dict[str, Any]] = {}
    evidence = gather_ansible(workspace, runner, hosts, plan, limit=limit, proxies=proxies) if plan else {}
    if exposures is not None:
        exposures.update(_check_exposures(hosts, proxies, plan, runner.display))
    verdicts = []
    for s in hosts:
        ev = evidence.get(s.host) or Evidence(host=s.host, target=s.target.value, error=(
            f"no model to verify on {s.host}: set ollama_models or pass --model" if s.host not in plan
            else f"no evidence came back from {s.host}"))
        found = (facts or {}).get(s.host)
        discovered = found if found is not None and found.source == "discovered" else None
        tuning = ServerTuning(context_length=s.ollama_context_length, num_parallel=s.ollama_num_parallel,
                              kv_cache_type=s.ollama_kv_cache_type)
        verdicts.append(judge(ev.for_host(tuning, discovered and discovered.nvidia_driver_version,
                                          discovered and discovered.device_majors,
                                          discovered.has_nvidia_gpu if discovered else None),
                              expect=expect.get(s.host)))
    return verdicts


def _check_exposures(hosts: list[HostSettings], proxies: Mapping[str, dict[str, Any]],
                     plan: Mapping[str, dict[str, str]], display: Display) -> dict[str, ExposureCheck]:
    """The exposure check of every exposed host, through its proxy from this machine."""
    from .verify import check_exposure

    found = {}
    for s in hosts:
        if not s.expose.exposed:
            continue
        proxy = proxies.get(s.host) or {}
        addresses = proxy.get("addresses") or []
        url = s.module.expose_url(s, addresses[0] if addresses else None)
        if not proxy.get("fingerprint"):
            found[s.host] = ExposureCheck(s.host, url, None, error=(
                f"the proxy's certificate could not be read on {s.host}: {proxy.get('error') or 'no answer'}"))
        else:
            found[s.host] = check_exposure(
                s.host, url, proxy["fingerprint"],
                [(t.name, t.token.get_secret_value()) for t in s.ollama_expose_tokens],
                model=plan.get(s.host, {}).get("model"),
                health_unauthenticated=s.ollama_expose_health_unauthenticated)
        for line in found[s.host].lines():
            display.line(line)
    return found


def run_uninstall(*, target: Target, inventory: Path, limit: str | None = None, workspace: Workspace,
                  purge: bool = False, destroy: bool = False, revert_host: bool = False, check: bool = False,
                  display: Display, runner: Runner | None = None) -> FlowResult:
    """Remove Ollama where each host runs it (the target says what that means); models stay unless ``purge``;
    the container or VM it runs in stays unless ``destroy``; what the target prepared on the host itself
    stays unless ``revert_host`` (a target that prepares nothing there refuses it before anything runs).

    Nothing is rendered: the roles get their variables from the settings alone.
    """
    from .targets import get

    try:
        uninstall_vars = get(target).uninstall_vars(purge, destroy, revert_host)
    except ProvisionError as exc:
        raise _failed(FlowResult("uninstall", Target(target)), exc, [], None) from None
    result, hosts = _load("uninstall", target, inventory, limit)
    result.check = check
    module = hosts[0].module
    runner = runner or AnsibleRunner(workspace, inventory, display)
    try:
        blocked = _not_applicable(hosts)
        if blocked is not None:
            raise NotBuiltYet(module.not_built("uninstalling", settings=blocked))
        role_vars = workspace.new_run_dir("uninstall-vars")
        for s in hosts:
            write_role_vars(s, role_vars / s.host, None)
        run = runner.run(module.playbook, limit=host_limit(hosts, limit), check=check, extravars=playbook_vars(
            hosts, provision_rendered_dir=str(role_vars), **uninstall_vars))
        result.steps.append("uninstall")
        result.notes = run.notes
        result.run_dirs = [str(d) for d in runner.run_dirs]
        _record_changes(result, run, hosts)
        kept = module.uninstall_kept(purge, destroy, revert_host)
        for s in hosts:
            host = result.host(s.host)
            host.place = module.place(s).description
            display.line(f"{'would remove' if check else 'removed'} Ollama from {s.host}: {host.changes} change(s); "
                         f"{kept}")
        return result
    except ProvisionError as exc:
        raise _failed(result, exc, hosts, runner) from None


def discovered_vram(target: Target, inventory: Path, workspace: Workspace, *, facts_given: bool,
                    display: Display, runner: Runner | None = None) -> dict[str, float]:
    """GPU memory in GiB per host (the smallest card of each) from discovered facts; 0 without a GPU.

    Without ``facts_given`` the hosts are discovered first (read-only).
    """
    from .discover import discover

    hosts = inv.load(inventory, target, None).hosts
    if not facts_given:
        discover(workspace, runner or AnsibleRunner(workspace, inventory, display), hosts)
    facts = load_hosts_facts(workspace.facts, hosts)
    out = {}
    for s in hosts:
        found = facts[s.host]
        sizes = [g.memory_total_mib for g in found.gpus if g.memory_total_mib] if found.source == "discovered" else []
        out[s.host] = round(min(sizes) / 1024, 1) if sizes else 0.0
    return out
