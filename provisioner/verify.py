"""Gather verification evidence from any reachable Ollama server over its HTTP API.

`provision verify --url URL --model M` needs no Ansible and no inventory: it reads
/api/version, preloads the model, times a short fixed-seed generation, reads
/api/ps, and hands the evidence to the judge. When the server runs on this very
machine (a loopback URL), the machine's own GPU evidence is added: device nodes,
nvidia-smi, the kernel driver version and the CPU flags.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import subprocess
import time
from typing import Any
from urllib.parse import urlparse

from .errors import InputError
from .facts import CPU_FLAGS

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
            for line in f:
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].split()
                    break
    except OSError:
        pass
    return {"device_nodes": nodes, "nvidia_smi": smi, "proc_driver_version": proc_version,
            "cpu_flags": [f for f in flags if f in CPU_FLAGS]}


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
