"""Gather verification evidence: from any reachable Ollama server over its HTTP API, or
inside the place where each host's Ollama runs through the verification role.

`provision verify --url URL --model M` needs no Ansible and no inventory: it reads
/api/version, preloads the model, times a short fixed-seed generation, reads /api/ps,
and hands the evidence to the judge. When the server runs on this very machine (a
loopback URL), the machine's own GPU evidence is added: device nodes, nvidia-smi, the
kernel driver version and the CPU flags.
"""

from __future__ import annotations

import json
import time
from typing import Any
from urllib.parse import urlparse

from .errors import InputError
from .evidence import Evidence, from_role, local_gpu
from .runner import Runner, host_limit, playbook_vars
from .workspace import Workspace

PROMPT = "Explain in one paragraph why the sky is blue."
GENERATE_OPTIONS = {"seed": 42, "num_predict": 64}


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def gather_http(url: str, model: str, *, timeout: float = 300.0) -> Evidence:
    """Evidence from the server at ``url`` for ``model``; ``error`` set when no verdict is possible."""
    import requests

    if not urlparse(url).scheme or not urlparse(url).hostname:
        raise InputError(f"--url {url!r} is not a URL; use e.g. http://127.0.0.1:11434")
    base = url.rstrip("/")
    found: dict[str, Any] = {"host": urlparse(url).netloc, "target": "url", "url": base, "model": model}
    session = requests.Session()
    try:
        found["version"] = session.get(f"{base}/api/version", timeout=10).json().get("version")
    except (requests.RequestException, ValueError) as exc:
        return Evidence(**found, error=f"server unreachable at {base}: {type(exc).__name__}")
    try:
        preload = session.post(f"{base}/api/generate", json={"model": model}, timeout=timeout)
        if preload.status_code == 404:
            return Evidence(**found, error=f"model {model} is not on the server at {base}; pull it first "
                                           f"(`ollama pull {model}`)")
        preload.raise_for_status()
        gen = session.post(f"{base}/api/generate", timeout=timeout, json={
            "model": model, "prompt": PROMPT, "stream": False, "options": GENERATE_OPTIONS,
        })
        gen.raise_for_status()
        found["generate"] = {k: v for k, v in gen.json().items() if k not in ("response", "context")}
        started = time.perf_counter()
        found["ps"] = session.get(f"{base}/api/ps", timeout=10).json()
        found["timings"] = {"ps_seconds": time.perf_counter() - started}
    except requests.RequestException as exc:
        return Evidence(**found, error=f"the server at {base} failed while loading {model}: {exc}")
    if _is_loopback(base):  # this machine's own devices are the server's
        found.update(local_gpu())
    return Evidence(**found)


def gather_ansible(workspace: Workspace, runner: Runner, hosts: list, plan: dict[str, dict[str, str]], *,
                   limit: str | None) -> dict[str, Evidence]:
    """Run playbooks/verify.yml on the hosts in ``plan`` ({host: {model, api_url}}); evidence per host.

    Each host's place (TargetModule.place) is reached the way the target's playbook reaches
    it, and the evidence is read there with the target's log and environment commands.
    """
    by_host = {s.host: s for s in hosts}
    evidence_dir = workspace.new_run_dir("evidence")
    per_host = {}
    for host, p in plan.items():
        per_host[host] = {**p, **by_host[host].module.evidence_commands(by_host[host])}
    runner.run("verify.yml", limit=host_limit(hosts, limit), extravars=playbook_vars(
        hosts, provision_verify=per_host, provision_evidence_dir=str(evidence_dir)))
    found = {}
    for host in plan:
        path = evidence_dir / f"{host}.json"
        if path.exists():
            ev = from_role(json.loads(path.read_text()), by_host[host].target.value)
            path.with_suffix(".evidence.json").write_text(ev.model_dump_json(indent=2) + "\n")
            found[host] = ev
    runner.display.line(f"evidence: {evidence_dir}")
    return found

