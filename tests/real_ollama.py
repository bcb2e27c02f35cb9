"""A real Ollama server for tests: the archive built by tests/infra/build-ollama.sh, run on a free port."""

from __future__ import annotations

import os
import socket
import subprocess
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

STATE = Path(os.environ.get("OLLAMA_PROVISIONER_STATE", "/var/tmp/ollama-provisioner"))
ARCHIVE = STATE / "www" / "ollama-linux-amd64.tgz"
MODEL_GGUF = STATE / "www" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_ollama(root: Path) -> Iterator[str]:
    """Unpack the archive into ``root``, serve it on a free port with the model ``smollm2``; yield its URL."""
    with tarfile.open(ARCHIVE) as tar:
        tar.extractall(root, filter="tar")
    for sub in ("tmp", "models", "home"):
        (root / sub).mkdir()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # A private TMPDIR: older bigdl-core-cpp builds delete $TMPDIR/ollama* at start.
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(root / "models"),
           "TMPDIR": str(root / "tmp"), "HOME": str(root / "home")}
    log = open(root / "serve.log", "w")
    proc = subprocess.Popen([str(root / "bin/ollama"), "serve"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        for _ in range(100):
            try:
                requests.get(f"{url}/api/version", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        modelfile = root / "Modelfile"
        modelfile.write_text(f"FROM {MODEL_GGUF}\n")
        subprocess.run([str(root / "bin/ollama"), "create", "smollm2", "-f", str(modelfile)],
                       env=env, check=True, capture_output=True, timeout=120)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def ollama_server(tmp_path_factory):
    """URL of a running real Ollama server that has the model `smollm2` (SmolLM2 135M)."""
    if not ARCHIVE.exists() or not MODEL_GGUF.exists():
        pytest.fail("no Ollama archive: run tests/infra/build-ollama.sh")
    with running_ollama(tmp_path_factory.mktemp("ollama")) as url:
        yield url
