"""The verification judge, from recorded evidence shaped like the real outputs.

Shapes: /api/ps and /api/generate (anchors §2.4), nvidia-smi's
--query-gpu=name,uuid,memory.total,memory.used,driver_version,pci.bus_id CSV,
/proc/driver/nvidia/version, and server log lines (anchors §2.6).
"""

from __future__ import annotations

import copy

import pytest

from provisioner.judge import RULES, driver_from_proc, judge, parse_nvidia_smi, processor

GIB = 2**30
PROC_VERSION = ("NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  Fri May 31 09:35:42 UTC 2024\n"
                "GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)\n")
SMI_4090 = "NVIDIA GeForce RTX 4090, GPU-452cac9f-6960-839c-4fb3-0cec83699196, 24564 MiB, 5800 MiB, 550.90.07, 00000000:01:00.0\n"
NODES = [
    {"path": "/dev/nvidia0", "major": 195, "minor": 0},
    {"path": "/dev/nvidiactl", "major": 195, "minor": 255},
    {"path": "/dev/nvidia-uvm", "major": 511, "minor": 0},
    {"path": "/dev/nvidia-uvm-tools", "major": 511, "minor": 1},
]
PS_MODEL = {
    "name": "llama3.2:3b", "model": "llama3.2:3b", "size": 5137025024,
    "digest": "2ae6f6dd7a3dd734790bbbf58b8909a606e0e7e97e94b7604e0aa7ae4490e6d8",
    "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                "parameter_size": "3.2B", "quantization_level": "Q4_K_M"},
    "expires_at": "2026-11-22T14:38:31.83753Z", "size_vram": 5137025024, "context_length": 8192,
}


def healthy(target: str = "native") -> dict:
    """A native host whose model runs 100% on an RTX 4090."""
    return {
        "host": "gpu1", "target": target, "version": "0.12.3", "model": "llama3.2:3b",
        "ps": {"models": [copy.deepcopy(PS_MODEL)]},
        "generate": {"model": "llama3.2:3b", "done": True, "done_reason": "length", "eval_count": 64,
                     "eval_duration": 400_000_000, "prompt_eval_count": 26},
        "nvidia_smi": {"rc": 0, "stdout": SMI_4090, "stderr": ""},
        "proc_driver_version": PROC_VERSION,
        "device_nodes": copy.deepcopy(NODES),
        "cpu_flags": ["sse4_2", "avx", "avx2", "fma"],
        "cuda_visible_devices": None,
        "log": ['time=2026-11-22T10:00:00Z level=INFO source=types.go:130 msg="inference compute" '
                'id=GPU-452cac9f library=cuda variant=v12 compute=8.9 driver=12.4 name="NVIDIA GeForce RTX 4090" '
                'total="23.6 GiB" available="23.2 GiB"'],
        "settings": {"context_length": 8192, "num_parallel": 1},
    }


def on_cpu(doc: dict) -> dict:
    doc["ps"]["models"][0]["size_vram"] = 0
    return doc


def rules_of(v) -> list[str]:
    return [c.rule for c in v.causes]


# --- Ollama's PROCESSOR algorithm ---------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "vram", "expected"),
    [
        (100, 100, ("gpu", "100% GPU")),
        (100, 0, ("cpu", "100% CPU")),
        (0, 0, ("cpu", "100% CPU")),  # size_vram == 0 is checked first, as in cmd.go
        (100, 120, ("unknown", "Unknown")),
        (0, 5, ("unknown", "Unknown")),
        (100, 58, ("split", "42%/58% CPU/GPU")),
        (41 * GIB, round(41 * GIB * 0.58), ("split", "42%/58% CPU/GPU")),
        (200, 101, ("split", "50%/50% CPU/GPU")),  # 49.5 rounds half away from zero, like Go's math.Round
        (1000, 995, ("split", "1%/99% CPU/GPU")),  # 0.5 -> 1
        (100, 94, ("split", "6%/94% CPU/GPU")),
    ],
)
def test_processor_is_ollama_ps_algorithm(size, vram, expected):
    assert processor(size, vram) == expected


# --- verdicts ---------------------------------------------------------------------------------


def test_full_gpu_is_a_pass_with_speed_and_efficiency():
    v = judge(healthy())
    assert (v.verdict, v.exit_code, v.summary) == ("gpu", 0, "llama3.2:3b: 100% GPU")
    assert v.tokens_per_second == pytest.approx(160.0)
    # bound: 1008 GB/s / 5.137 GB read per token = 196.2 tok/s
    assert v.bound_tokens_per_second == pytest.approx(1008e9 / 5137025024)
    assert v.efficiency_percent == pytest.approx(160.0 / (1008e9 / 5137025024) * 100)
    assert v.causes == []


def test_split_reports_percentages_and_the_vram_cause():
    doc = healthy()
    doc["ps"]["models"][0].update(size=41 * GIB, size_vram=round(41 * GIB * 0.58))
    v = judge(doc)
    assert (v.verdict, v.exit_code) == ("split", 1)
    assert v.models[0].processor_text == "42%/58% CPU/GPU"
    assert rules_of(v) == ["vram-too-small"]
    assert "needs 41.0 GiB (weights + KV cache for context 8192 x 1 parallel) but the GPU has 24.0 GiB" in v.causes[0].cause


def test_overall_verdict_is_the_worst_model():
    doc = healthy()
    doc["model"] = None
    second = dict(PS_MODEL, name="tiny:1b", model="tiny:1b", size=1000, size_vram=0)
    doc["ps"]["models"].append(second)
    assert judge(doc).verdict == "cpu"


def test_server_older_than_0_9_7_has_no_context_length():
    doc = healthy()
    del doc["ps"]["models"][0]["context_length"]
    v = judge(doc)
    assert v.verdict == "gpu" and v.models[0].context_length is None


def test_expect_cpu_makes_cpu_a_pass():
    v = judge(on_cpu(healthy()), expect="cpu")
    assert (v.verdict, v.exit_code) == ("cpu", 0)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"error": "server unreachable: connection refused"}, "server unreachable"),
        ({"ps": {"models": []}}, "model llama3.2:3b is not loaded"),
    ],
)
def test_no_verdict_is_exit_3_with_the_reason(change, reason):
    doc = healthy()
    doc.update(change)
    v = judge(doc)
    assert (v.verdict, v.exit_code) == ("error", 3)
    assert reason in v.reason


def test_json_document_has_the_documented_fields():
    d = judge(on_cpu(healthy())).to_dict()
    assert {"verdict", "models", "tokens_per_second", "causes"} <= set(d)
    assert set(d["models"][0]) >= {"name", "size", "size_vram", "processor"}
    assert all(set(c) >= {"cause", "fix"} for c in d["causes"])


# --- the cause catalogue: one test per rule ---------------------------------------------


def _no_gpu(doc):
    doc["device_nodes"] = []
    doc["nvidia_smi"] = {"rc": 127, "stdout": "", "stderr": "sh: 1: nvidia-smi: not found"}
    doc["proc_driver_version"] = None
    doc["log"] = ['level=INFO source=types.go:130 msg="inference compute" id=0 library=cpu variant="" compute="" '
                  'driver=0.0 name="" total="31.3 GiB" available="30.4 GiB"']
    return on_cpu(doc)


def _uvm_missing(doc):
    doc["device_nodes"] = [n for n in doc["device_nodes"] if "uvm" not in n["path"]]
    return on_cpu(doc)


def _smi_missing(doc):
    doc["nvidia_smi"] = {"rc": 127, "stdout": "", "stderr": "nvidia-smi: command not found"}
    doc["host_driver_version"] = "550.90.07"
    return on_cpu(doc)


def _mismatch_nvml(doc):
    doc["nvidia_smi"] = {"rc": 18, "stdout": "Failed to initialize NVML: Driver/library version mismatch\n"
                                               "NVML library version: 550.54", "stderr": ""}
    return on_cpu(doc)


def _mismatch_versions(doc):
    doc["host_driver_version"] = "550.90.07"
    doc["nvidia_smi"]["stdout"] = SMI_4090.replace("550.90.07", "550.54.14")
    return on_cpu(doc)


def _old_driver(doc):
    doc["nvidia_smi"]["stdout"] = SMI_4090.replace("550.90.07", "535.183.01")
    return on_cpu(doc)


def _old_driver_old_cc(doc):
    doc["nvidia_smi"]["stdout"] = "Tesla P40, GPU-1, 23040 MiB, 0 MiB, 560.35.03, 00000000:02:00.0\n"
    doc["log"] = ['msg="inference compute" id=GPU-1 library=cuda variant=v12 compute=6.1 driver=12.6 name="Tesla P40"']
    return on_cpu(doc)


def _no_avx(doc):
    doc["cpu_flags"] = ["sse4_2", "ssse3"]
    return on_cpu(doc)


def _docker_no_request(doc):
    doc["docker"] = {"runtimes": ["runc"], "device_requests": []}
    return on_cpu(doc)


def _docker_no_runtime(doc):
    doc["docker"] = {"runtimes": ["runc"], "device_requests": [
        {"Driver": "nvidia", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]], "Options": {}}]}
    return on_cpu(doc)


def _cuda(code):
    def change(doc):
        doc["log"].append(f'cuda driver library failed to get device context {code}time=2026-11-22T10:00:01Z level=WARN '
                          'source=gpu.go:434 msg="error looking up nvidia GPU memory"')
        return on_cpu(doc)
    return change


# docker inspect / docker info of a container that requested the GPU on an engine with the runtime.
DOCKER_GPU = {"device_requests": [{"Driver": "nvidia", "Count": -1, "DeviceIDs": None, "Capabilities": [["gpu"]],
                                   "Options": {}}],
              "runtime": "runc", "runtimes": ["io.containerd.runc.v2", "nvidia", "runc"], "cgroup_driver": "systemd"}


def _nvml_unknown(doc):
    doc["log"].append("Failed to initialize NVML: Unknown Error")
    return on_cpu(doc)


def _docker_nvml_lost(doc):
    # A systemctl daemon-reload on the host under the systemd cgroup driver, after the container started.
    doc["docker"] = copy.deepcopy(DOCKER_GPU)
    doc["nvidia_smi"] = {"rc": 255, "stdout": "", "stderr": "Failed to initialize NVML: Unknown Error"}
    return on_cpu(doc)


def _hidden(doc):
    doc["cuda_visible_devices"] = "-1"
    return on_cpu(doc)


def _too_big(doc):
    doc["ps"]["models"][0].update(size=30 * GIB, size_vram=0)
    return doc


def _denied(doc):
    # dash's error for an open the device cgroup refuses, as the verification role records it.
    doc["node_access"] = {"/dev/nvidia0": "Operation not permitted", "/dev/nvidiactl": "Operation not permitted",
                          "/dev/nvidia-uvm": "ok"}
    return on_cpu(doc)


def _stale_uvm_major(doc):
    # The host's /proc/devices says nvidia-uvm is 508 since its last boot; the container's node is 511.
    doc["host_device_majors"] = {"nvidia-frontend": 195, "nvidia-uvm": 508}
    return on_cpu(doc)


def _nvml_without_driver(doc):
    # Debian's nvidia-smi in a container that reaches no kernel driver (exit 255).
    doc["nvidia_smi"] = {"rc": 255, "stdout": "", "stderr": "Failed to initialize NVML: Unknown Error"}
    doc["proc_driver_version"] = None
    return on_cpu(doc)


def _nvml_with_driver(doc):
    doc["nvidia_smi"] = {"rc": 255, "stdout": "", "stderr": "Failed to initialize NVML: Unknown Error"}
    return on_cpu(doc)


CASES = [
    ("native", _no_gpu, "no-device-node", "no NVIDIA GPU visible in the target", "nvidia_driver_install"),
    ("docker", _no_gpu, "no-device-node", "no NVIDIA GPU visible in the target", "nvidia-ctk runtime configure"),
    ("lxc", _no_gpu, "no-device-node", "no NVIDIA GPU visible in the target", "devN entries"),
    ("kvm", _no_gpu, "no-device-node", "no NVIDIA GPU visible in the target", "vfio-pci"),
    ("lxc", _uvm_missing, "nvidia-uvm-missing", "/dev/nvidia-uvm is missing", "nvidia-modprobe -u -c=0"),
    ("lxc", _smi_missing, "nvidia-smi-missing", "nvidia-smi is missing in the target", "exactly the host's version (550.90.07)"),
    ("native", _mismatch_nvml, "driver-mismatch", "Driver/library version mismatch", "reboot"),
    ("docker", _mismatch_nvml, "driver-mismatch", "Driver/library version mismatch", "recreate the container"),
    ("lxc", _mismatch_versions, "driver-mismatch", "550.54.14 in the target differs from the host's kernel driver 550.90.07", "exactly 550.90.07"),
    ("native", _old_driver, "driver-too-old", "535.183.01 is older than Ollama's minimum 550", "550 or newer"),
    ("native", _old_driver_old_cc, "driver-too-old", "minimum 570 for compute capability 6.1", "570 or newer"),
    ("kvm", _no_avx, "vm-cpu-without-avx", "lacks AVX", "host-passthrough"),
    ("docker", _docker_no_request, "docker-no-gpu-request", "without a GPU request", "capabilities: [gpu]"),
    ("docker", _docker_no_runtime, "docker-no-nvidia-runtime", "requests a GPU but Docker has no nvidia runtime configured (runc)",
     "nvidia-ctk runtime configure"),
    ("native", _cuda(999), "cuda-error", "CUDA error 999", "modprobe nvidia_uvm"),
    ("docker", _cuda(800), "cuda-error", "CUDA error 800", "cgroupfs"),
    ("native", _cuda(46), "cuda-error", "CUDA error 46", "nvidia-smi -c DEFAULT"),
    ("lxc", _nvml_unknown, "cuda-error", "Failed to initialize NVML: Unknown Error", "restart Ollama's container"),
    ("docker", _docker_nvml_lost, "docker-nvml-lost", "under the systemd cgroup driver: a `systemctl daemon-reload`",
     "native.cgroupdriver=cgroupfs"),
    ("native", _hidden, "cuda-visible-devices", "CUDA_VISIBLE_DEVICES=-1", "ollama_cuda_visible_devices"),
    ("native", _too_big, "vram-too-small", "needs 30.0 GiB", "smaller quantisation"),
    ("lxc", _denied, "device-denied", "/dev/nvidia0, /dev/nvidiactl are in the target but the device cgroup refuses "
     "to open them (Operation not permitted)", "lxc.cgroup2.devices.allow = c MAJOR:* rwm"),
    ("lxc", _stale_uvm_major, "majors-differ", "/dev/nvidia-uvm in the target has major 511 but the host's nvidia-uvm "
     "is 508", "remove nodes made with mknod inside the container"),
    ("lxc", _nvml_without_driver, "no-driver-reachable", "no /proc/driver/nvidia/version: no NVIDIA kernel driver is "
     "reachable", "modprobe nvidia"),
    ("native", _nvml_with_driver, "cuda-error", "NVML lost the GPU", "nvidia-smi"),
]


@pytest.mark.parametrize(("target", "change", "rule", "cause", "fix"), CASES,
                         ids=[f"{c[0]}-{c[2]}-{i}" for i, c in enumerate(CASES)])
def test_cause_rule_names_cause_and_fix(target, change, rule, cause, fix):
    v = judge(change(healthy(target)))
    assert v.verdict == "cpu"
    assert rules_of(v)[0] == rule, rules_of(v)
    assert cause in v.causes[0].cause
    assert fix in v.causes[0].fix


def test_a_docker_host_without_a_gpu_is_not_told_to_request_one():
    doc = _docker_no_request(healthy("docker"))
    doc["host_gpu"] = False
    assert "docker-no-gpu-request" not in rules_of(judge(doc))
    doc["host_gpu"] = None  # not known: the request is still the likely cause
    assert rules_of(judge(doc))[0] == "docker-no-gpu-request"


def test_every_rule_has_a_case():
    tested = {c[2] for c in CASES}
    registered = {name for name, _ in RULES} | {"docker-no-nvidia-runtime"}
    assert "no-device-node" in registered
    assert registered <= tested


def test_a_healthy_gpu_host_on_cpu_for_no_known_reason_gets_no_invented_cause():
    v = judge(on_cpu(healthy()))
    assert v.verdict == "cpu" and v.causes == []


# --- parsers ---------------------------------------------------------------------------------


def test_nvidia_smi_csv_rows():
    (row,) = parse_nvidia_smi(SMI_4090)
    assert (row.name, row.memory_total_mib, row.memory_used_mib, row.driver_version) == \
        ("NVIDIA GeForce RTX 4090", 24564, 5800, "550.90.07")


@pytest.mark.parametrize(
    ("text", "version"),
    [
        (PROC_VERSION, "550.90.07"),
        ("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.133.07  Release Build  (dvs-builder@U16)", "570.133.07"),
        (None, None),
    ],
)
def test_driver_version_from_proc(text, version):
    assert driver_from_proc(text) == version


def test_a_remote_server_seen_over_http_only_gets_no_guessed_device_cause():
    doc = on_cpu(healthy())
    doc.update(device_nodes=None, nvidia_smi=None, proc_driver_version=None, cpu_flags=[], log=[])
    v = judge(doc)
    assert rules_of(v) == ["target-not-inspected"]
    assert "provision verify --target" in v.causes[0].fix


def test_a_model_asked_for_without_tag_matches_latest():
    doc = healthy()
    doc["model"] = "llama3.2"
    doc["ps"]["models"][0].update(name="llama3.2:latest", model="llama3.2:latest")
    assert judge(doc).verdict == "gpu"
