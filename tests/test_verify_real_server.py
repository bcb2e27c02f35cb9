"""`provision verify --url` against a real Ollama server (CPU build) with a real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from provisioner.cli import app
from tests.real_ollama import free_port, ollama_server  # noqa: F401 - fixture

pytestmark = pytest.mark.infra
NO_GPU_HERE = not Path("/dev/nvidia0").exists()


def test_model_on_cpu_is_judged_cpu_with_the_cause_and_exit_1(runner, ollama_server):
    result = runner.invoke(app, ["verify", "--url", ollama_server, "--model", "smollm2", "--json"])
    assert result.exit_code == 1, result.output
    doc = json.loads(result.output)
    assert doc["verdict"] == "cpu"
    (model,) = doc["models"]
    assert model["name"] == "smollm2:latest"
    assert model["size"] > 100_000_000 and model["size_vram"] == 0
    assert model["processor"] == "cpu"
    assert doc["tokens_per_second"] > 0
    if NO_GPU_HERE:
        assert doc["causes"][0]["cause"] == "no NVIDIA GPU visible in the target (no /dev/nvidia0 device node)"
        assert doc["causes"][0]["fix"]


def test_expect_cpu_turns_cpu_into_a_pass(runner, ollama_server):
    result = runner.invoke(app, ["verify", "--url", ollama_server, "-m", "smollm2", "--expect", "cpu"])
    assert result.exit_code == 0, result.output
    assert "smollm2:latest: 100% CPU" in result.output
    assert "cpu is the expected result here (expected: cpu), so this passes" in result.output


def test_missing_model_is_no_verdict_exit_3(runner, ollama_server):
    result = runner.invoke(app, ["verify", "--url", ollama_server, "-m", "not-pulled:7b", "--json"])
    assert result.exit_code == 3
    doc = json.loads(result.output)
    assert doc["verdict"] == "error"
    assert "model not-pulled:7b is not on the server" in doc["reason"]


def test_unreachable_server_is_no_verdict_exit_3(runner):
    result = runner.invoke(app, ["verify", "--url", f"http://127.0.0.1:{free_port()}", "-m", "smollm2"])
    assert result.exit_code == 3
    assert "server unreachable" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["verify", "--url", "http://127.0.0.1:1"], "--model is required"),
        (["verify", "--url", "nonsense", "-m", "x"], "is not a URL"),
        (["verify", "--url", "http://127.0.0.1:1", "-m", "x", "--expect", "fast"], "--expect 'fast' is not a verdict"),
        (["verify"], "give --url URL --model M"),
    ],
)
def test_bad_usage_is_exit_2(runner, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output
