"""Gather verification evidence from any reachable Ollama server over its HTTP API.

`provision verify --url URL --model M` needs no Ansible and no inventory: it reads
/api/version, preloads the model, times a short fixed-seed generation, reads
/api/ps, and hands the evidence to the judge. When the server runs on this very
machine (a loopback URL), the machine's own GPU evidence is added: device nodes,
nvidia-smi, the kernel driver version and the CPU flags.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlparse

from .errors import InputError
from .facts import cpu_flags_of

SMI_QUERY = "--query-gpu=name,uuid,memory.total,memory.used,driver_version,pci.bus_id"
PROMPT = "Explain in one paragraph why the sky is blue."
GENERATE_OPTIONS = {"seed": 42, "num_predict": 64}


def _is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    return host in ("localhost", "::1") or host.startswith("127.")


def local_gpu_evidence() -> dict[str, Any]:
    """This machine's GPU evidence, in the shape the verification role collects on a target."""
    nodes = []
    for path in sorted(glob.glob("/dev/nvidia*") + glob.glob("/dev/nvidia-caps/*")):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            nodes.append({"path": path, "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev)})
    smi_path = shutil.which("nvidia-smi")
    if smi_path:
        proc = subprocess.run([smi_path, SMI_QUERY, "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30, check=False)
        smi = {"rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr}
    else:
        smi = {"rc": 127, "stdout": "", "stderr": "nvidia-smi: not found", "missing": True}
    try:
        with open("/proc/driver/nvidia/version") as f:
            proc_version = f.read()
    except OSError:
        proc_version = None
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            flags = cpu_flags_of(next((line for line in f if line.startswith("flags")), ""))
    except OSError:
        pass
    return {"device_nodes": nodes, "nvidia_smi": smi, "proc_driver_version": proc_version, "cpu_flags": flags}


def gather_http(url: str, model: str, *, timeout: float = 300.0) -> dict[str, Any]:
    """Evidence from the server at ``url`` for ``model``; an ``error`` key when no verdict is possible."""
    import requests

    if not urlparse(url).scheme or not urlparse(url).hostname:
        raise InputError(f"--url {url!r} is not a URL; use e.g. http://127.0.0.1:11434")
    base = url.rstrip("/")
    doc: dict[str, Any] = {"host": urlparse(url).netloc, "target": "url", "url": base, "model": model,
                           "device_nodes": None, "nvidia_smi": None}
    session = requests.Session()
    try:
        doc["version"] = session.get(f"{base}/api/version", timeout=10).json().get("version")
    except (requests.RequestException, ValueError) as exc:
        doc["error"] = f"server unreachable at {base}: {type(exc).__name__}"
        return doc
    try:
        preload = session.post(f"{base}/api/generate", json={"model": model}, timeout=timeout)
        if preload.status_code == 404:
            doc["error"] = f"model {model} is not on the server at {base}; pull it first (`ollama pull {model}`)"
            return doc
        preload.raise_for_status()
        gen = session.post(f"{base}/api/generate", timeout=timeout, json={
            "model": model, "prompt": PROMPT, "stream": False, "options": GENERATE_OPTIONS,
        })
        gen.raise_for_status()
        doc["generate"] = {k: v for k, v in gen.json().items() if k not in ("response", "context")}
        started = time.perf_counter()
        doc["ps"] = session.get(f"{base}/api/ps", timeout=10).json()
        doc["timings"] = {"ps_seconds": time.perf_counter() - started}
    except requests.RequestException as exc:
        doc["error"] = f"the server at {base} failed while loading {model}: {exc}"
        return doc
    if _is_loopback(base):
        doc.update(local_gpu_evidence())
        doc["target"] = "native"
    return doc


def evidence_from_role(doc: dict[str, Any], target: str) -> dict[str, Any]:
    """The ollama_verify role's document (HTTP answers + raw outputs) in the judge's evidence shape."""
    from .discover import parse_nodes, sections

    url, model = doc.get("url", ""), doc.get("model", "")
    ev: dict[str, Any] = {"host": doc.get("host", "?"), "target": target, "url": url, "model": model,
                          "version": doc.get("version")}
    raw = sections(str(doc.get("raw") or ""))
    smi_rc = next((int(k.split()[1]) for k in raw if k.startswith("smi_rc ") and k.split()[1].isdigit()), 127)
    smi_out = "\n".join(raw.get("smi", []))
    ev["nvidia_smi"] = {"rc": smi_rc, "stdout": smi_out if smi_rc == 0 else "", "stderr": "" if smi_rc == 0 else smi_out,
                        "missing": smi_rc == 127}
    ev["proc_driver_version"] = "\n".join(raw.get("driver", [])) or None
    ev["device_nodes"] = [n.model_dump() for n in parse_nodes(raw.get("nodes", []))]
    ev["cpu_flags"] = cpu_flags_of(" ".join(raw.get("cpuinfo", [])))
    env = dict(w.split("=", 1) for w in " ".join(raw.get("env", [])).split() if "=" in w)
    ev["cuda_visible_devices"] = env.get("CUDA_VISIBLE_DEVICES")
    ev["log"] = raw.get("log", [])
    if int(doc.get("version_status") or -1) != 200:
        ev["error"] = f"server unreachable at {url} on {ev['host']}: {doc.get('version_error') or 'no answer'}"
    elif doc.get("load_status") == 404:
        ev["error"] = f"model {model} is not on the server of {ev['host']}; pull it first (`ollama pull {model}`)"
    elif doc.get("load_status") != 200 or not doc.get("ps"):
        ev["error"] = f"the server of {ev['host']} failed while loading {model}: {doc.get('load_error') or 'no answer'}"
    else:
        ev["generate"] = doc.get("generate") or {}
        ev["ps"] = doc.get("ps")
    return ev


def gather_ansible(inventory: Path, target: str, plan: dict[str, dict[str, str]], *, limit: str | None,
                   runs_dir: Path, echo: Callable[[str], None]) -> dict[str, dict[str, Any]]:
    """Run playbooks/verify.yml on the hosts in ``plan`` ({host: {model, api_url}}); evidence per host."""
    from .runner import run_playbook
    from .targets import spec

    tspec = spec(target)
    evidence_dir = (runs_dir / f"{time.strftime('%Y%m%d-%H%M%S')}-evidence").resolve()
    evidence_dir.mkdir(parents=True, exist_ok=True)
    per_host = {h: {**p, "log_command": tspec.log_command, "env_command": tspec.env_command} for h, p in plan.items()}
    run_playbook("verify.yml", inventory, limit=limit, echo=echo, runs_dir=runs_dir, extravars={
        "provision_group": tspec.group, "provision_verify": per_host, "provision_evidence_dir": str(evidence_dir),
    })
    found = {}
    for host in plan:
        path = evidence_dir / f"{host}.json"
        if path.exists():
            ev = evidence_from_role(json.loads(path.read_text()), tspec.target.value)
            path.with_suffix(".evidence.json").write_text(json.dumps(ev, indent=2) + "\n")
            found[host] = ev
    echo(f"evidence: {evidence_dir}")
    return found
