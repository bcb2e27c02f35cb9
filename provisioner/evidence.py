"""The verification evidence: one typed model, built here from whatever gathered it.

Three sources fill it: the ollama_verify role's document (``from_role``, evidence read
inside the place where Ollama runs), a server's HTTP API (``verify.gather_http``, which
calls ``Evidence`` with what it read), and this machine's own GPU evidence for a loopback
URL (``local_gpu``). The flow adds what it knows about the host (``for_host``). The judge
reads only this model, so every verdict can be tested from a recorded document.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .facts import DeviceNode, driver_from_proc

SMI_QUERY = "--query-gpu=name,uuid,memory.total,memory.used,driver_version,pci.bus_id"


class GpuRow(BaseModel):
    name: str
    uuid: str
    memory_total_mib: int
    memory_used_mib: int
    driver_version: str
    bus_id: str


def parse_nvidia_smi(stdout: str) -> list[GpuRow]:
    """Rows of `nvidia-smi --query-gpu=name,uuid,memory.total,memory.used,driver_version,pci.bus_id
    --format=csv,noheader`, e.g. 'NVIDIA GeForce RTX 4090, GPU-…, 24564 MiB, 1 MiB, 550.90.07, 00000000:01:00.0'."""
    rows = []
    for line in stdout.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 6:
            continue
        try:
            total = int(parts[2].split()[0])
            used = int(parts[3].split()[0])
        except (ValueError, IndexError):
            continue
        rows.append(GpuRow(name=parts[0], uuid=parts[1], memory_total_mib=total, memory_used_mib=used,
                           driver_version=parts[4], bus_id=parts[5]))
    return rows


class NvidiaSmi(BaseModel):
    """nvidia-smi run inside the place: exit code 127 and ``missing`` when it is not installed."""

    rc: int = 127
    stdout: str = ""
    stderr: str = ""
    missing: bool = False


class ServerTuning(BaseModel):
    """The server settings that decide how much memory a model takes (from the inventory)."""

    model_config = ConfigDict(extra="ignore")

    context_length: int | None = None
    num_parallel: int | None = None
    kv_cache_type: str | None = None


class DockerView(BaseModel):
    """What Docker says of the container and its engine (``docker inspect``, ``docker info``)."""

    model_config = ConfigDict(extra="ignore")

    # HostConfig.DeviceRequests: [{"Driver": "nvidia", "Count": -1, "Capabilities": [["gpu"]], ...}]
    device_requests: list[dict[str, Any]] = Field(default_factory=list)
    # HostConfig.Runtime: the OCI runtime the container was started with ("runc", "nvidia").
    runtime: str | None = None
    # The engine's runtimes (names) and cgroup driver ("systemd" or "cgroupfs").
    runtimes: list[str] = Field(default_factory=list)
    cgroup_driver: str | None = None
    server_version: str | None = None

    @field_validator("device_requests", mode="before")
    @classmethod
    def _none_is_empty(cls, v: Any) -> Any:
        return v or []

    @field_validator("runtimes", mode="before")
    @classmethod
    def _names(cls, v: Any) -> Any:
        # docker info's .Runtimes is an object keyed by name.
        return sorted(v) if isinstance(v, dict) else (v or [])

    @property
    def gpu_requested(self) -> bool:
        return any(r.get("Driver") == "nvidia" or ["gpu"] in (r.get("Capabilities") or [])
                   for r in self.device_requests)


def parse_inspect(lines: list[str]) -> DockerView | None:
    """The ``### inspect`` section: JSON objects one per line (the container's, then its engine's),
    merged; None when no line is one (no such container, no engine)."""
    found: dict[str, Any] = {}
    for line in lines:
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, dict):
            found.update(doc)
    return DockerView.model_validate(found) if found else None


class Evidence(BaseModel):
    """Where a model runs and why: the server's answers plus what was read inside its place."""

    model_config = ConfigDict(extra="ignore")

    host: str = "?"
    # The target whose place was inspected; "url" for a server seen only over HTTP.
    target: str = "url"
    url: str | None = None
    model: str | None = None
    version: str | None = None
    # Why no verdict can be reached (server unreachable, model missing); None when the rest is there.
    error: str | None = None
    generate: dict[str, Any] | None = None
    ps: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    # Inside the place; None where it could not be seen (a remote server over HTTP).
    nvidia_smi: NvidiaSmi | None = None
    proc_driver_version: str | None = None
    device_nodes: list[DeviceNode] | None = None
    # What opening each node in the target gave: "ok", or the error ("Operation not permitted":
    # the device cgroup refuses it; "No such device or address": no driver behind its major).
    node_access: dict[str, str] = Field(default_factory=dict)
    cpu_flags: list[str] = Field(default_factory=list)
    cuda_visible_devices: str | None = None
    log: list[str] = Field(default_factory=list)
    # docker inspect of the container and docker info of its engine, where the place is one.
    docker: DockerView | None = None
    # The host's kernel driver and device majors (from its facts), for a container whose user
    # space or nodes may differ from them.
    host_driver_version: str | None = None
    host_device_majors: dict[str, int] = Field(default_factory=dict)
    # Whether the host's discovered facts show an NVIDIA GPU (None: not known).
    host_gpu: bool | None = None
    settings: ServerTuning = Field(default_factory=ServerTuning)

    # --- reading ----------------------------------------------------------------------------
    @property
    def smi_found(self) -> bool:
        return self.nvidia_smi is not None and self.nvidia_smi.rc != 127 and not self.nvidia_smi.missing

    @property
    def smi_ok(self) -> bool:
        return self.smi_found and self.nvidia_smi is not None and self.nvidia_smi.rc == 0

    @property
    def smi_text(self) -> str:
        return "" if self.nvidia_smi is None else f"{self.nvidia_smi.stdout}\n{self.nvidia_smi.stderr}"

    @property
    def gpus(self) -> list[GpuRow]:
        return parse_nvidia_smi(self.nvidia_smi.stdout) if self.smi_ok and self.nvidia_smi else []

    @property
    def nodes_known(self) -> bool:
        return self.device_nodes is not None

    @property
    def flags(self) -> set[str]:
        return {f.lower() for f in self.cpu_flags}

    @property
    def target_driver(self) -> str | None:
        gpus = self.gpus
        return (gpus[0].driver_version if gpus else None) or driver_from_proc(self.proc_driver_version)

    def node(self, name: str) -> DeviceNode | None:
        return next((n for n in self.device_nodes or [] if n.path == f"/dev/{name}"), None)

    @property
    def has_gpu_node(self) -> bool:
        return any(re.fullmatch(r"/dev/nvidia\d+", n.path) for n in self.device_nodes or [])

    def log_match(self, pattern: str) -> re.Match[str] | None:
        rx = re.compile(pattern)
        for line in self.log:
            m = rx.search(line)
            if m:
                return m
        return None

    # --- what the flow knows about the host -------------------------------------------------
    def for_host(self, tuning: ServerTuning, host_driver_version: str | None = None,
                 host_device_majors: dict[str, int] | None = None, host_gpu: bool | None = None) -> Evidence:
        return self.model_copy(update={"settings": tuning, "host_driver_version": host_driver_version,
                                       "host_device_majors": dict(host_device_majors or {}), "host_gpu": host_gpu})


def sections(text: str) -> dict[str, list[str]]:
    """The '### name' sections of a role's raw output, each a list of its non-empty lines."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("### "):
            current = line[4:].strip()
            out[current] = []
        elif current is not None and line.strip():
            out[current].append(line.rstrip())
    return out


def parse_nodes(lines: list[str]) -> list[DeviceNode]:
    """Lines of `PATH $(stat -c '%t %T' PATH)`: stat prints hexadecimal, majors are decimal everywhere else."""
    nodes = []
    for line in lines:
        parts = line.split()
        if len(parts) == 3:
            nodes.append(DeviceNode(path=parts[0], major=int(parts[1], 16), minor=int(parts[2], 16)))
    return nodes


def from_role(doc: dict[str, Any], target: str) -> Evidence:
    """The ollama_verify role's document (HTTP answers + raw outputs read inside the place)."""
    from .facts import cpu_flags_of

    url, model = doc.get("url", ""), doc.get("model", "")
    host = doc.get("host", "?")
    raw = sections(str(doc.get("raw") or ""))
    smi_rc = next((int(k.split()[1]) for k in raw if k.startswith("smi_rc ") and k.split()[1].isdigit()), 127)
    smi_out = "\n".join(raw.get("smi", []))
    env = dict(w.split("=", 1) for w in " ".join(raw.get("env", [])).split() if "=" in w)
    error = None
    if int(doc.get("version_status") or -1) != 200:
        error = f"server unreachable at {url} on {host}: {doc.get('version_error') or 'no answer'}"
    elif doc.get("load_status") == 404:
        error = f"model {model} is not on the server of {host}; pull it first (`ollama pull {model}`)"
    elif doc.get("load_status") != 200 or not doc.get("ps"):
        error = f"the server of {host} failed while loading {model}: {doc.get('load_error') or 'no answer'}"
    return Evidence(
        host=host, target=target, url=url, model=model, version=doc.get("version"), error=error,
        generate=None if error else doc.get("generate") or {},
        ps=None if error else doc.get("ps"),
        nvidia_smi=NvidiaSmi(rc=smi_rc, stdout=smi_out if smi_rc == 0 else "",
                             stderr="" if smi_rc == 0 else smi_out, missing=smi_rc == 127),
        proc_driver_version="\n".join(raw.get("driver", [])) or None,
        device_nodes=parse_nodes(raw.get("nodes", [])),
        node_access=dict(line.split(" ", 1) for line in raw.get("open", []) if " " in line),
        cpu_flags=cpu_flags_of(" ".join(raw.get("cpuinfo", []))),
        cuda_visible_devices=env.get("CUDA_VISIBLE_DEVICES"),
        log=raw.get("log", []),
        docker=parse_inspect(raw.get("inspect", [])),
    )


def local_gpu() -> dict[str, Any]:
    """This machine's GPU evidence (device nodes, nvidia-smi, driver, CPU flags) as Evidence fields."""
    import glob
    import os
    import shutil
    import stat
    import subprocess

    from .facts import cpu_flags_of

    nodes = []
    for path in sorted(glob.glob("/dev/nvidia*") + glob.glob("/dev/nvidia-caps/*")):
        try:
            st = os.stat(path)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode):
            nodes.append(DeviceNode(path=path, major=os.major(st.st_rdev), minor=os.minor(st.st_rdev)))
    smi_path = shutil.which("nvidia-smi")
    if smi_path:
        proc = subprocess.run([smi_path, SMI_QUERY, "--format=csv,noheader"], capture_output=True, text=True,
                              timeout=30, check=False)
        smi = NvidiaSmi(rc=proc.returncode, stdout=proc.stdout, stderr=proc.stderr)
    else:
        smi = NvidiaSmi(rc=127, stderr="nvidia-smi: not found", missing=True)
    try:
        with open("/proc/driver/nvidia/version") as f:
            proc_version: str | None = f.read()
    except OSError:
        proc_version = None
    flags: list[str] = []
    try:
        with open("/proc/cpuinfo") as f:
            flags = cpu_flags_of(next((line for line in f if line.startswith("flags")), ""))
    except OSError:
        pass
    return {"device_nodes": nodes, "nvidia_smi": smi, "proc_driver_version": proc_version, "cpu_flags": flags}
