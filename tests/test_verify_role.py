"""The ollama_verify role's document turned into evidence and judged.

`role-evidence-native-cpu.json` was recorded from a real run of the role against the real
Ollama server in the local native container (no GPU). The GPU document below is built from
the real output formats (nvidia-smi's CSV, /proc/driver/nvidia/version, stat's hex majors).
"""

from __future__ import annotations

import copy
import json

from provisioner.evidence import from_role
from provisioner.judge import judge
from tests.conftest import ROOT


def evidence_from_role(doc: dict, target: str) -> dict:
    """The typed evidence built from the role's document, as the plain data it serialises to."""
    return from_role(doc, target).model_dump()


RECORDED = json.loads((ROOT / "tests/fixtures/role-evidence-native-cpu.json").read_text())

GPU_RAW = """### smi
NVIDIA GeForce RTX 4090, GPU-5a1b2c3d-0000-1111-2222-333344445555, 24564 MiB, 2811 MiB, 550.90.07, 00000000:01:00.0
### smi_rc 0
### driver
NVRM version: NVIDIA UNIX x86_64 Kernel Module  550.90.07  Fri May 31 09:35:42 UTC 2024
### nodes
/dev/nvidia0 c3 0
/dev/nvidiactl c3 ff
/dev/nvidia-uvm 1ff 0
### open
/dev/nvidia0 ok
/dev/nvidiactl ok
/dev/nvidia-uvm ok
### cpuinfo
flags\t\t: fpu sse4_2 avx f16c avx2 fma
### env
HOME=/usr/share/ollama OLLAMA_HOST=127.0.0.1:11434 CUDA_VISIBLE_DEVICES=0
### log
time=2025-01-10T10:00:00.000Z level=INFO source=types.go:131 msg="inference compute" id=GPU-5a1b2c3d library=cuda variant=v12 compute=8.9 driver=12.4 name="NVIDIA GeForce RTX 4090" total="23.6 GiB" available="23.2 GiB"
llm_load_tensors: offloaded 29/29 layers to GPU
"""


def test_the_recorded_cpu_run_is_judged_100_percent_cpu_with_its_cause():
    ev = evidence_from_role(RECORDED, "native")
    assert ev["nvidia_smi"]["missing"] and ev["device_nodes"] == [] and "avx2" in ev["cpu_flags"]
    assert any("/api/generate" in line for line in ev["log"])
    verdict = judge(ev)
    assert verdict.verdict == "cpu" and verdict.models[0].processor_text == "100% CPU"
    assert verdict.tokens_per_second == 64 / RECORDED["generate"]["eval_duration"] * 1e9
    assert [c.cause for c in verdict.causes][0].startswith("no NVIDIA GPU visible in the target")
    assert judge(ev, expect="cpu").exit_code == 0 and verdict.exit_code == 1


def test_a_gpu_run_is_judged_100_percent_gpu_with_its_speed_bound():
    doc = copy.deepcopy(RECORDED)
    doc["raw"] = GPU_RAW
    doc["ps"]["models"][0]["size_vram"] = doc["ps"]["models"][0]["size"]
    ev = evidence_from_role(doc, "native")
    assert [(n["path"], n["major"], n["minor"]) for n in ev["device_nodes"]] == [
        ("/dev/nvidia0", 195, 0), ("/dev/nvidiactl", 195, 255), ("/dev/nvidia-uvm", 511, 0)]
    assert ev["cuda_visible_devices"] == "0" and ev["nvidia_smi"]["rc"] == 0
    verdict = judge(ev)
    assert (verdict.verdict, verdict.gpu, verdict.exit_code) == ("gpu", "NVIDIA GeForce RTX 4090", 0)
    assert verdict.efficiency_percent is not None and not verdict.causes


def test_nvidia_smi_failing_in_the_target_is_kept_as_its_error():
    doc = copy.deepcopy(RECORDED)
    doc["raw"] = "### smi\nFailed to initialize NVML: Driver/library version mismatch\n### smi_rc 18\n"
    ev = evidence_from_role(doc, "lxc")
    assert ev["nvidia_smi"] == {"rc": 18, "stdout": "", "missing": False,
                                "stderr": "Failed to initialize NVML: Driver/library version mismatch"}
    assert "driver-mismatch" in [c.rule for c in judge(ev).causes]


def test_a_missing_model_and_an_unreachable_server_give_no_verdict():
    missing = {**RECORDED, "load_status": 404, "ps": None}
    verdict = judge(evidence_from_role(missing, "native"))
    assert verdict.verdict == "error" and verdict.exit_code == 3 and "is not on the server" in verdict.reason
    down = {**RECORDED, "version_status": -1, "version_error": "Connection refused", "load_status": None}
    verdict = judge(evidence_from_role(down, "native"))
    assert verdict.exit_code == 3 and "server unreachable" in verdict.reason and "Connection refused" in verdict.reason


def test_a_node_the_device_cgroup_refuses_is_read_from_the_role_s_open_section():
    doc = copy.deepcopy(RECORDED)
    # dash prints "sh: 1: cannot open /dev/nvidia0: Operation not permitted"; the role keeps the text after ": ".
    doc["raw"] = GPU_RAW.replace("/dev/nvidia0 ok", "/dev/nvidia0 Operation not permitted")
    ev = evidence_from_role(doc, "lxc")
    assert ev["node_access"] == {"/dev/nvidia0": "Operation not permitted", "/dev/nvidiactl": "ok",
                                 "/dev/nvidia-uvm": "ok"}
    assert [c.rule for c in judge(ev).causes][0] == "device-denied"


# The `### inspect` section as the docker target's inspect_command prints it (docker inspect, then
# docker info, each a Go template printing one JSON line; see tests/test_docker.py for the real run).
DOCKER_INSPECT = """### inspect
{"device_requests":[{"Driver":"nvidia","Count":-1,"DeviceIDs":null,"Capabilities":[["gpu"]],"Options":{}}],"runtime":"runc"}
{"runtimes":{"io.containerd.runc.v2":{"path":"runc"},"runc":{"path":"runc"}},"cgroup_driver":"systemd","server_version":"20.10.24+dfsg1"}
"""


def test_docker_inspect_lines_become_the_docker_view_and_name_the_missing_runtime():
    doc = copy.deepcopy(RECORDED)
    doc["raw"] = RECORDED["raw"] + "\n" + DOCKER_INSPECT
    ev = from_role(doc, "docker")
    assert ev.docker is not None and ev.docker.gpu_requested
    assert (ev.docker.runtime, ev.docker.runtimes, ev.docker.cgroup_driver) == (
        "runc", ["io.containerd.runc.v2", "runc"], "systemd")
    assert "docker-no-nvidia-runtime" in [c.rule for c in judge(ev).causes]


def test_a_container_docker_cannot_inspect_gives_no_docker_view():
    doc = copy.deepcopy(RECORDED)
    doc["raw"] = RECORDED["raw"] + "\n### inspect\nError: No such container: ollama\n"
    assert from_role(doc, "docker").docker is None
    assert from_role(RECORDED, "native").docker is None
