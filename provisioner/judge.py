"""The GPU-offload judge: a pure function from evidence gathered on a target to a verdict.

Evidence is one typed document per host (provisioner.evidence: what the verification
role collects inside the target, or what `provision verify --url` reads over HTTP). The
judge names, per model, what
`ollama ps` would print in its PROCESSOR column (Ollama's own algorithm,
cmd/cmd.go ListRunningHandler), the measured tokens/s against the bound that the
GPU's memory bandwidth sets, and when the model is not 100% on the GPU, the most
likely cause with its fix: the fix text comes from the target whose place was
inspected (TargetModule.fixes), the generic one otherwise.
"""

from __future__ import annotations

import re

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

from .evidence import Evidence, GpuRow, parse_nvidia_smi
from .facts import MIN_DRIVER_OLD_CC, NVIDIA_MAJOR, driver_from_proc, driver_major, minimum_driver

# Readers of the evidence formats, importable from here as before.
__all__ = ["Cause", "GpuRow", "ModelVerdict", "RULES", "Verdict", "driver_from_proc", "judge",
           "parse_nvidia_smi", "processor"]

# Memory bandwidth in GB/s of common NVIDIA cards (vendor specifications). Matched
# against nvidia-smi's name, most specific first.
BANDWIDTH_GBPS: dict[str, float] = {
    "RTX 5090": 1792, "RTX 5080": 960, "RTX 5070 Ti": 896, "RTX 5070": 672,
    "RTX 4090": 1008, "RTX 4080 SUPER": 736, "RTX 4080": 716.8, "RTX 4070 Ti SUPER": 672,
    "RTX 4070 Ti": 504, "RTX 4070 SUPER": 504, "RTX 4070": 504, "RTX 4060 Ti": 288, "RTX 4060": 272,
    "RTX 3090 Ti": 1008, "RTX 3090": 936, "RTX 3080 Ti": 912, "RTX 3080": 760, "RTX 3070 Ti": 608,
    "RTX 3070": 448, "RTX 3060 Ti": 448, "RTX 3060": 360, "RTX 2080 Ti": 616, "RTX 2080": 448,
    "RTX 2070": 448, "RTX 2060": 336, "GTX 1080 Ti": 484, "GTX 1080": 320, "GTX 1070": 256,
    "TITAN RTX": 672, "RTX 6000 Ada": 960, "RTX A6000": 768, "RTX A5000": 768, "RTX A4000": 448,
    "H200": 4800, "H100 NVL": 3900, "H100 PCIe": 2000, "H100 80GB HBM3": 3350, "H100": 3350,
    "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935, "A100-PCIE-40GB": 1555, "A100": 1555,
    "L40S": 864, "L40": 864, "L4": 300, "A40": 696, "A10G": 600, "A10": 600, "T4": 320,
    "V100": 900, "P100": 732, "P40": 347,
}


@dataclass
class ModelVerdict:
    name: str
    size: int
    size_vram: int
    processor: str  # gpu | split | cpu | unknown
    processor_text: str  # what `ollama ps` prints: "100% GPU", "42%/58% CPU/GPU", ...
    context_length: int | None = None
    # What the fit estimate predicted for this GPU before loading (provisioner.fit), when it can tell.
    predicted: str | None = None


@dataclass
class Cause:
    rule: str
    cause: str
    fix: str


@dataclass
class Verdict:
    host: str
    target: str
    verdict: str  # gpu | split | cpu | unknown | error
    models: list[ModelVerdict] = field(default_factory=list)
    tokens_per_second: float | None = None
    bound_tokens_per_second: float | None = None
    efficiency_percent: float | None = None
    gpu: str | None = None
    causes: list[Cause] = field(default_factory=list)
    reason: str | None = None  # why no verdict could be reached (verdict "error")
    expected: str | None = None

    @property
    def summary(self) -> str:
        if self.verdict == "error":
            return f"no verdict: {self.reason}"
        return ", ".join(f"{m.name}: {m.processor_text}" for m in self.models) or self.verdict

    @property
    def exit_code(self) -> int:
        if self.verdict == "error":
            return 3
        if self.verdict == "gpu" or (self.expected is not None and self.verdict == self.expected):
            return 0
        return 1

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["summary"] = self.summary
        data["exit_code"] = self.exit_code
        return data


# --- Ollama's PROCESSOR algorithm ------------------------------------------------------


def processor(size: int, size_vram: int) -> tuple[str, str]:
    """Exactly `ollama ps` (cmd/cmd.go, unchanged since v0.1.38): (kind, text)."""
    if size_vram == 0:
        return "cpu", "100% CPU"
    if size_vram == size:
        return "gpu", "100% GPU"
    if size_vram > size or size == 0:
        return "unknown", "Unknown"
    cpu_percent = _go_round((size - size_vram) / size * 100)
    return "split", f"{cpu_percent}%/{100 - cpu_percent}% CPU/GPU"


def _go_round(x: float) -> int:
    """Go's math.Round: half away from zero (Python's round() rounds half to even)."""
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


_SEVERITY = {"gpu": 0, "split": 1, "unknown": 2, "cpu": 3}


# --- reading evidence ----------------------------------------------------------------------


def _compute_capability(log: list[str]) -> tuple[int, int] | None:
    for line in log:
        if "inference compute" in line:
            m = re.search(r"\bcompute=(\d+)\.(\d+)", line)
            if m:
                return int(m.group(1)), int(m.group(2))
    return None


# --- the cause catalogue: evidence pattern -> cause -> fix ----------------------------------

_NVML_UNKNOWN = "Failed to initialize NVML: Unknown Error"

Rule = Callable[[Evidence, list[ModelVerdict]], Cause | None]
RULES: list[tuple[str, Rule]] = []


def rule(name: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        RULES.append((name, fn))
        return fn

    return register


@rule("cuda-visible-devices")
def _cuda_hidden(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    if str(ev.cuda_visible_devices).strip() == "-1":
        return Cause("cuda-visible-devices", "CUDA_VISIBLE_DEVICES=-1 hides every GPU from Ollama",
                     "remove ollama_cuda_visible_devices from the inventory, or set it to GPU indexes or UUIDs (`nvidia-smi -L`)")
    return None


@rule("no-device-node")
def _no_nodes(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    if not ev.nodes_known or ev.has_gpu_node:
        return None
    return Cause("no-device-node", "no NVIDIA GPU visible in the target (no /dev/nvidia0 device node)",
                 "load the NVIDIA driver on the host (set nvidia_driver_install: true, or install it and reboot), "
                 "then check `ls -l /dev/nvidia*`")


@rule("device-denied")
def _denied(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    denied = [path for path, result in ev.node_access.items() if "Operation not permitted" in result]
    if not denied:
        return None
    return Cause("device-denied", f"{', '.join(denied)} {'is' if len(denied) == 1 else 'are'} in the target but the "
                                  f"device cgroup refuses to open {'it' if len(denied) == 1 else 'them'} "
                                  "(Operation not permitted)",
                 "allow the NVIDIA majors (`grep nvidia /proc/devices` on the host) in the target's device cgroup, "
                 "then restart it")


def _host_major(ev: Evidence, path: str) -> tuple[str, int] | None:
    """The host's major for a node path: 195 for /dev/nvidiaN and nvidiactl, else the module's from /proc/devices."""
    name = path.removeprefix("/dev/")
    if name.startswith("nvidia-uvm"):
        key = "nvidia-uvm"
    elif name.startswith("nvidia-caps/"):
        key = "nvidia-caps"
    elif name.startswith("nvidia") and (name[6:] in ("ctl", "-modeset") or name[6:].isdigit()):
        key = "nvidia-frontend"
    else:
        return None
    major = ev.host_device_majors.get(key, NVIDIA_MAJOR if key == "nvidia-frontend" else None)
    return (key, major) if major is not None else None


@rule("majors-differ")
def _majors(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    if not ev.host_device_majors:
        return None
    for node in ev.device_nodes or []:
        host = _host_major(ev, node.path)
        if host is not None and host[1] != node.major:
            return Cause("majors-differ", f"{node.path} in the target has major {node.major} but the host's {host[0]} "
                                          f"is {host[1]}: the node was made for another boot or another host",
                         "remove nodes made by hand in the target and pass the host's nodes in with rules for the host's "
                         "majors (`grep nvidia /proc/devices`), then restart the target")
    return None


@rule("no-driver-reachable")
def _no_driver(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    nvml = _NVML_UNKNOWN
    if ev.proc_driver_version or not ev.nodes_known or not (nvml in ev.smi_text or ev.log_match(nvml)):
        return None
    return Cause("no-driver-reachable", f"nvidia-smi fails with '{nvml}' and the target has no "
                                        "/proc/driver/nvidia/version: no NVIDIA kernel driver is reachable",
                 "load the NVIDIA kernel driver on the host (`modprobe nvidia`, or nvidia_driver_install: true) and "
                 "check that /proc/driver/nvidia/version exists there")


@rule("docker-no-gpu-request")
def _docker(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    if ev.docker is None:  # read only where the place is a container (docker inspect)
        return None
    if not ev.docker.gpu_requested:
        if ev.host_gpu is False:  # the facts show no GPU: no request is right (one could not start)
            return None
        return Cause("docker-no-gpu-request", "the container was started without a GPU request "
                                              "(docker inspect: HostConfig.DeviceRequests is empty)",
                     "add deploy.resources.reservations.devices (driver: nvidia, capabilities: [gpu]) or run with --gpus all")
    if "nvidia" not in ev.docker.runtimes:
        engine = f" ({', '.join(ev.docker.runtimes)})" if ev.docker.runtimes else ""
        return Cause("docker-no-nvidia-runtime", f"the container requests a GPU but Docker has no nvidia runtime "
                                                 f"configured{engine}",
                     "install nvidia-container-toolkit, run `nvidia-ctk runtime configure --runtime=docker` and restart docker")
    return None



@rule("docker-nvml-lost")
def _docker_nvml(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    # NVML worked when the container started, then lost its devices: under the systemd cgroup
    # driver a `systemctl daemon-reload` on the host rewrites the container's device rules.
    if ev.docker is None or not ev.proc_driver_version or not (_NVML_UNKNOWN in ev.smi_text or ev.log_match(_NVML_UNKNOWN)):
        return None
    driver = f" under the {ev.docker.cgroup_driver} cgroup driver" if ev.docker.cgroup_driver else ""
    return Cause("docker-nvml-lost", f"NVML lost the GPU inside the container ({_NVML_UNKNOWN}){driver}: "
                                     "a `systemctl daemon-reload` on the host drops the device access that the "
                                     "NVIDIA runtime set up when the container started",
                 "set exec-opts native.cgroupdriver=cgroupfs in /etc/docker/daemon.json, restart docker and "
                 "recreate the container (`provision --target docker` merges it for you)")


@rule("nvidia-uvm-missing")
def _uvm(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    if not ev.has_gpu_node or ev.node("nvidia-uvm") is not None:
        return None
    return Cause("nvidia-uvm-missing", "/dev/nvidia-uvm is missing: CUDA cannot allocate GPU memory",
                 "load the module with `nvidia-modprobe -u -c=0` (or `modprobe nvidia-uvm`) and make it load at boot")


@rule("nvidia-smi-missing")
def _no_smi(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    if not ev.has_gpu_node or ev.smi_found:
        return None
    return Cause("nvidia-smi-missing", "nvidia-smi is missing in the target: the NVIDIA user-space driver is not installed",
                 "install the NVIDIA driver's user-space tools (nvidia-smi) matching the kernel module")


@rule("driver-mismatch")
def _mismatch(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    nvml = "Driver/library version mismatch" in ev.smi_text or \
        ev.log_match(r"version mismatch between driver and cuda driver library")
    host, target = ev.host_driver_version, ev.target_driver
    differ = host and target and host != target
    if not (nvml or differ):
        return None
    if differ:
        cause = f"user-space driver {target} in the target differs from the host's kernel driver {host}"
    else:
        cause = 'NVML fails with "Driver/library version mismatch": the loaded kernel module and the libraries differ'
    return Cause("driver-mismatch", cause,
                 "reboot after a driver upgrade so the loaded kernel module matches the installed libraries")


@rule("driver-too-old")
def _old_driver(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    version = ev.target_driver or ev.host_driver_version
    major = driver_major(version)
    if major is None:
        return None
    cc = _compute_capability(ev.log)
    minimum = minimum_driver(cc)
    if major >= minimum:
        return None
    why = f" for compute capability {cc[0]}.{cc[1]}" if minimum == MIN_DRIVER_OLD_CC and cc else ""
    return Cause("driver-too-old", f"NVIDIA driver {version} is older than Ollama's minimum {minimum}{why}",
                 f"upgrade the host driver to {minimum} or newer (nvidia_driver_install: true) and reboot")


@rule("vm-cpu-without-avx")
def _avx(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    from .targets import named

    logged = ev.log_match(r"CPU does not have (AVX|minimum vector extensions)")
    module = named(ev.target)
    virtual = module is not None and module.virtual_cpu
    if not logged and not (virtual and ev.flags and "avx" not in ev.flags):
        return None
    return Cause("vm-cpu-without-avx", "the CPU Ollama runs on lacks AVX (a VM whose CPU model hides the host's)",
                 "run Ollama on a CPU with AVX/AVX2 (x86-64-v3); in a VM, give the guest the host's CPU model")


_CUDA_ERRORS = {
    "999": ("CUDA error 999 (unknown error), typical after suspend/resume or a driver change",
            "reload the UVM module (`rmmod nvidia_uvm && modprobe nvidia_uvm`) or reboot; keep the GPU out of suspend"),
    "800": ("CUDA error 800 (operation not permitted): the target may not use the GPU device",
            "check the device cgroup: Docker with the cgroupfs driver (exec-opts native.cgroupdriver=cgroupfs), "
            "LXC allow rules for every NVIDIA major; then restart the target"),
    "46": ("CUDA error 46: the GPU is busy or in exclusive-process mode",
           "stop the other GPU process, or set the default compute mode (`nvidia-smi -c DEFAULT`)"),
}


@rule("cuda-error")
def _cuda_error(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    # Ollama's C log has no newline after the code: "…device context 800time=…".
    m = ev.log_match(r"(?:failed to get device context|CUDA error|cuda error|error code)\D{0,20}(999|800|46)(?!\d)")
    if m is None:
        # With no driver reachable at all, no-driver-reachable names it; here a driver is there. In a
        # Docker container docker-nvml-lost names it with Docker's cause.
        if ev.docker is None and ev.proc_driver_version and (ev.log_match(_NVML_UNKNOWN) or _NVML_UNKNOWN in ev.smi_text):
            return Cause("cuda-error", f"NVML lost the GPU ({_NVML_UNKNOWN}): the target can no longer open "
                                       "the NVIDIA devices it had",
                         "restart Ollama's container or VM so that its device access is set up again, and check "
                         "that the host's `nvidia-smi` still works")
        return None
    cause, fix = _CUDA_ERRORS[m.group(1)]
    return Cause("cuda-error", cause, fix)


@rule("vram-too-small")
def _vram(ev: Evidence, models: list[ModelVerdict]) -> Cause | None:
    gpus = ev.gpus
    if not gpus:
        return None
    free_mib = sum(g.memory_total_mib for g in gpus)
    worst = next((m for m in models if m.processor in ("split", "cpu") and m.size > 0), None)
    if worst is None or (worst.processor == "cpu" and worst.size < free_mib * 2**20):
        return None
    need = worst.size / 2**30
    have = free_mib / 1024
    ctx = worst.context_length or ev.settings.context_length
    par = ev.settings.num_parallel
    detail = f" (weights + KV cache for context {ctx}" + (f" x {par} parallel" if par else "") + ")" if ctx else ""
    return Cause("vram-too-small", f"{worst.name} needs {need:.1f} GiB{detail} but the GPU has {have:.1f} GiB",
                 "pick a smaller quantisation or model, lower ollama_context_length or ollama_num_parallel, "
                 "or set ollama_kv_cache_type: q8_0 with flash attention")


# --- speed against the bound ------------------------------------------------------------------


def bandwidth_gbps(gpu_name: str) -> float | None:
    for key in sorted(BANDWIDTH_GBPS, key=len, reverse=True):
        if key.lower() in gpu_name.lower():
            return BANDWIDTH_GBPS[key]
    return None


def tokens_per_second(generate: dict[str, Any] | None) -> float | None:
    if not generate:
        return None
    count, duration = generate.get("eval_count"), generate.get("eval_duration")
    if not count or not duration:
        return None
    return count / duration * 1e9


# --- the judge ---------------------------------------------------------------------------------


def _prediction(ev: Evidence, ps_model: dict[str, Any]) -> str | None:
    """The fit estimate for this model on the target's GPU memory, if both are known."""
    from .fit import find_by_details, predict

    details = ps_model.get("details") or {}
    arch = find_by_details(details.get("family"), details.get("parameter_size"))
    if arch is None or not ev.gpus:
        return None
    context = ps_model.get("context_length") or ev.settings.context_length or 4096
    try:
        fit = predict(arch, str(details.get("quantization_level") or "Q4_K_M"), int(context),
                      int(ev.settings.num_parallel or 1), str(ev.settings.kv_cache_type or "f16"),
                      sum(g.memory_total_mib for g in ev.gpus) * 2**20)
    except ValueError:
        return None
    return fit.text


def with_default_tag(name: str) -> str:
    """Ollama's name for a model asked for without a tag: 'smollm2' is 'smollm2:latest'."""
    return name if ":" in name.rsplit("/", 1)[-1] else f"{name}:latest"


def judge(evidence: Evidence | dict[str, Any], expect: str | None = None,
          fixes: Mapping[str, str] | None = None) -> Verdict:
    """A verdict from one host's evidence; never raises on odd evidence.

    ``fixes`` are the fix texts of the target whose place was inspected (TargetModule.fixes,
    which may use {host_driver}); by default those of the evidence's own target.
    """
    from .targets import named

    ev = evidence if isinstance(evidence, Evidence) else Evidence.model_validate(evidence)
    if fixes is None:
        module = named(ev.target)
        fixes = module.fixes if module is not None else {}
    verdict = Verdict(host=ev.host, target=ev.target, verdict="error", expected=expect)
    if ev.error:
        verdict.reason = ev.error
        return verdict
    model = ev.model
    ps_models = (ev.ps or {}).get("models") or []
    if model:
        wanted = {model, with_default_tag(model)}
        ps_models = [m for m in ps_models if m.get("name") in wanted or m.get("model") in wanted]
    if not ps_models:
        verdict.reason = f"model {model} is not loaded (not in /api/ps)" if model else "no model is loaded (/api/ps is empty)"
        return verdict

    for m in ps_models:
        size, size_vram = int(m.get("size") or 0), int(m.get("size_vram") or 0)
        kind, text = processor(size, size_vram)
        verdict.models.append(ModelVerdict(
            name=str(m.get("name")), size=size, size_vram=size_vram, processor=kind,
            processor_text=text, context_length=m.get("context_length"),  # absent before 0.9.7
            predicted=_prediction(ev, m),
        ))
    verdict.verdict = max((m.processor for m in verdict.models), key=_SEVERITY.__getitem__)

    verdict.tokens_per_second = tokens_per_second(ev.generate)
    gpus = ev.gpus
    if gpus:
        verdict.gpu = gpus[0].name
        bw = bandwidth_gbps(gpus[0].name)
        in_vram = sum(m.size_vram for m in verdict.models)
        if bw and in_vram and verdict.tokens_per_second:
            verdict.bound_tokens_per_second = bw * 1e9 / in_vram
            verdict.efficiency_percent = 100 * verdict.tokens_per_second / verdict.bound_tokens_per_second

    if verdict.verdict != "gpu":
        host_driver = ev.host_driver_version or "the host's driver version"
        for _, fn in RULES:
            cause = fn(ev, verdict.models)
            if cause is not None:
                if cause.rule in fixes:
                    cause.fix = fixes[cause.rule].format(host_driver=host_driver)
                verdict.causes.append(cause)
        if not verdict.causes and not ev.nodes_known:
            verdict.causes.append(Cause(
                "target-not-inspected",
                "the server did not use a GPU; its machine's devices and drivers cannot be seen over HTTP",
                "run `provision verify --target T -i INVENTORY` to gather evidence on the target itself",
            ))
    return verdict
