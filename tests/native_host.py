"""A real native target for tests and benchmarks: a Docker container with systemd as PID 1,
reached by Ansible's community.docker.docker connection, and an HTTP server on the Docker host
that serves the release archives and the model built by tests/infra/build-ollama.sh.
"""

from __future__ import annotations

import functools
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.real_ollama import STATE

IMAGE = "local/debian-systemd:bookworm"
# The Docker host as containers on the default bridge see it.
DOCKER_HOST_IP = "172.17.0.1"
VERSION_A = "0.5.4-ipexllm-20250407"
VERSION_B = "0.5.5-ipexllm-relabel1"  # build-ollama.sh: A relabelled, in www/next/
MODEL_FILE = "models/SmolLM2-135M-Instruct.Q4_1.gguf"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


# The host as an LXC container on lxcbr0 sees it (lxc-net).
LXC_HOST_IP = "10.0.3.1"


@contextmanager
def www_server(host_ip: str = DOCKER_HOST_IP) -> Iterator[str]:
    """Serve $STATE/www on a free port of every interface; yield its URL as containers reach it
    (Docker containers by default, LXC containers with host_ip=LXC_HOST_IP)."""
    handler = functools.partial(_Quiet, directory=str(STATE / "www"))
    server = ThreadingHTTPServer(("0.0.0.0", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://{host_ip}:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def systemd_container(prefix: str = "op-test") -> Iterator[str]:
    """A fresh container with systemd running (unprivileged: SYS_ADMIN, private cgroup namespace)."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "run", "-d", "--name", name, "--hostname", name, "--cgroupns=private",
                    "--cap-add", "SYS_ADMIN", "--tmpfs", "/run", "--tmpfs", "/run/lock", IMAGE],
                   check=True, capture_output=True)
    try:
        for _ in range(60):
            state = sh(name, "systemctl is-system-running", check=False)
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)


def sh(container: str, command: str, check: bool = True) -> str:
    """Run a shell command in the container; its stdout, stripped."""
    proc = subprocess.run(["docker", "exec", container, "sh", "-c", command], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"{command!r} in {container} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout.strip()


def write_native_inventory(directory: Path, container: str, www: str, **variables) -> Path:
    """An inventory whose native group is the container, installing release A and the SmolLM2 model."""
    host = {"ansible_connection": "community.docker.docker", "ansible_host": container,
            "ansible_python_interpreter": "/usr/bin/python3"}
    settings = {
        "ollama_version": VERSION_A,
        "ollama_archive": f"{www}/ollama-linux-amd64.tgz",
        "ollama_models": [{"name": "smollm2", "from": f"{www}/{MODEL_FILE}"}],
        **variables,
    }
    directory.mkdir(parents=True, exist_ok=True)
    doc = {"all": {"children": {"native": {"hosts": {container: host}}}, "vars": settings}}
    (directory / "hosts.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory
