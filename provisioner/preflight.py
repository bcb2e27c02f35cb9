"""Preflight: the known ways a host fails a target, checked from discovered facts before any change.

Pure functions of settings and facts, so every refusal is tested from recorded facts.
A refusal names the host, what was found and the fix; nothing on any host is changed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import PreflightError, ProvisionError
from .facts import HostFacts, driver_major, minimum_driver

if TYPE_CHECKING:
    from .settings import HostSettings


@dataclass
class HostPreflight:
    host: str
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    # The nvidia_host role installs or upgrades the distribution's driver on this run.
    install_driver: bool = False
    # No NVIDIA GPU: the install is for CPU and the verification expects "100% CPU".
    cpu_only: bool = False
    # The host's NVIDIA kernel driver version (what a container's user space must match).
    driver_version: str | None = None
    # Role variables the target decided from the host's facts (the kernel arguments of its IOMMU, say);
    # TargetModule.host_vars passes them on.
    role_vars: dict[str, Any] = field(default_factory=dict)


def check_host_driver(settings: HostSettings, facts: HostFacts) -> HostPreflight:
    """The host's NVIDIA driver against Ollama's minimum (550; 570 for compute capability 5.0-6.2)."""
    result = HostPreflight(settings.host)
    gpus = facts.nvidia_pci_addresses
    driver = facts.nvidia_driver_version
    result.driver_version = driver
    if not facts.has_nvidia_gpu:
        result.cpu_only = True
        result.notes.append(f"{settings.host}: no NVIDIA GPU found (no PCI device of vendor 10de, no driver): "
                            "installing for CPU; the verification is expected to report 100% CPU")
        return result
    ccs = [g.cc for g in facts.gpus if g.cc]
    cc = min(ccs) if ccs else None
    minimum = minimum_driver(cc)
    why = f" (compute capability {cc[0]}.{cc[1]} needs {minimum})" if cc and minimum != minimum_driver(None) else ""
    install_hint = (f"install NVIDIA driver {minimum} or newer on {settings.host}, or set nvidia_driver_install: true "
                    "(and nvidia_driver_allow_reboot: true to let it reboot)")
    if not driver:
        problem = f"{settings.host}: NVIDIA GPU {', '.join(gpus)} found but no NVIDIA driver is loaded"
    elif (driver_major(driver) or 0) < minimum:
        problem = f"{settings.host}: NVIDIA driver {driver} is older than Ollama's minimum {minimum}{why}"
    else:
        names = ", ".join(g.name for g in facts.gpus) or ", ".join(gpus)
        result.notes.append(f"{settings.host}: NVIDIA driver {driver} for {names} (minimum {minimum}{why})")
        return result
    if settings.nvidia_driver_install:
        result.install_driver = True
        result.notes.append(f"{problem}: installing the distribution's driver (nvidia_driver_install: true)")
    else:
        result.problems.append(f"{problem}; {install_hint}")
    return result


def check(hosts: list[tuple[HostSettings, HostFacts]]) -> list[HostPreflight]:
    """Each host's target checks it from its facts (TargetModule.preflight); nothing is raised."""
    return [s.module.preflight(s, f) for s, f in hosts]


def refuse(results: list[HostPreflight]) -> None:
    """Raise PreflightError listing every refused host (one line each), if any is."""
    problems = [p for r in results for p in r.problems]
    if problems:
        raise PreflightError(problems[0], details=[*problems[1:], "nothing on any host was changed"])


def preflight(hosts: list[tuple[HostSettings, HostFacts]]) -> list[HostPreflight]:
    """Check every host; raise PreflightError listing every refused host (one line each)."""
    results = check(hosts)
    refuse(results)
    return results


def run_preflight(*, target: Any, inventory: Any, limit: str | None = None, workspace: Any,
                  facts_given: bool = False, display: Any, runner: Any = None) -> Any:
    """`provision preflight`: validate, discover (unless ``facts_given``) and check every host; change nothing.

    Returns the flow's result (command "preflight", each host's notes and problems under ``preflight``);
    raises PreflightError, carrying that result, when any host is refused.
    """
    from .discover import discover
    from .facts import load_hosts_facts
    from .flow import _failed, _load
    from .runner import AnsibleRunner

    result, hosts = _load("preflight", target, inventory, limit)
    display.line(f"validated {len(hosts)} host(s) of target {target}: {', '.join(h.host for h in hosts)}")
    runner = runner or AnsibleRunner(workspace, inventory, display)
    try:
        if not facts_given:
            display.line("discover: reading each host's GPU, driver, PCI and IOMMU facts (read-only)")
            discover(workspace, runner, hosts, limit=limit)
            result.steps.append("discover")
        facts = load_hosts_facts(workspace.facts, hosts)
        checked = check([(s, facts[s.host]) for s in hosts])
        for p in checked:
            result.host(p.host).preflight = [*p.notes, *p.problems]
            for note in p.notes:
                display.line(f"preflight: {note}")
        result.steps.append("preflight")
        result.run_dirs = [str(d) for d in runner.run_dirs]
        refuse(checked)
        return result
    except PreflightError as exc:
        raise _failed(result, exc, hosts, None) from None
    except ProvisionError as exc:
        raise _failed(result, exc, hosts, runner) from None
