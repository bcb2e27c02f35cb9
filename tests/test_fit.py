"""Fit prediction: weights + KV cache + allowance against GPU memory, and `provision plan`."""

from __future__ import annotations

import json

import pytest

from provisioner.cli import app
from provisioner.fit import GIB, KV_BYTES, OVERHEAD_BYTES, find, find_by_details, predict
from provisioner.judge import judge
from tests.test_judge import healthy

LLAMA8 = find("llama3.1:8b")


def test_kv_cache_is_two_times_layers_heads_dims_context_parallel_bytes():
    fit = predict(LLAMA8, "Q4_K_M", 8192, 1, "f16", 24 * GIB)
    assert fit.kv_bytes == 2 * 32 * 8 * 128 * 8192 * 2 == GIB
    assert fit.weights_bytes == int(8.03 * 1e9 * 4.85 / 8)
    assert fit.total_bytes == fit.weights_bytes + fit.kv_bytes + OVERHEAD_BYTES


def test_parallel_multiplies_and_quantised_cache_shrinks_the_kv_cache():
    base = predict(LLAMA8, "Q4_K_M", 8192, 1, "f16", 24 * GIB).kv_bytes
    assert predict(LLAMA8, "Q4_K_M", 8192, 4, "f16", 24 * GIB).kv_bytes == 4 * base
    assert predict(LLAMA8, "Q4_K_M", 8192, 1, "q8_0", 24 * GIB).kv_bytes == int(base / 2 * KV_BYTES["q8_0"])


@pytest.mark.parametrize(
    ("model", "quant", "context", "vram_gib", "processor"),
    [
        ("llama3.1:8b", "Q4_K_M", 8192, 8, "gpu"),
        ("llama3.1:8b", "F16", 8192, 8, "split"),
        ("llama3.1:70b", "Q4_K_M", 4096, 24, "split"),
        ("llama3.1:70b", "Q4_K_M", 4096, 0.5, "cpu"),
        # the context alone pushes a model off the GPU (ollama#14073): 128k context on 12 GiB
        ("llama3.1:8b", "Q4_K_M", 131072, 12, "split"),
    ],
)
def test_predicted_processor(model, quant, context, vram_gib, processor):
    assert predict(find(model), quant, context, 1, "f16", int(vram_gib * GIB)).processor == processor


def test_split_share_is_whole_layers_that_fit():
    fit = predict(find("llama3.1:70b"), "Q4_K_M", 4096, 1, "f16", 24 * GIB)
    assert 40 <= fit.gpu_percent <= 60
    assert fit.text == f"{100 - fit.gpu_percent}%/{fit.gpu_percent}% CPU/GPU"


def test_ps_details_map_to_the_catalogue():
    assert find_by_details("llama", "3.2B").name == "llama3.2:3b"
    # Ollama reports the GGUF architecture as family: qwen2.5 models are "qwen2".
    assert find_by_details("qwen2", "7.6B").name == "qwen2.5:7b"
    assert find_by_details("phi3", "14B") is None  # not in the catalogue: no guess
    assert find_by_details("llama", "134.52M") is None


def test_unknown_quantisation_is_refused():
    with pytest.raises(ValueError, match="unknown quantisation 'Q3_XS'"):
        predict(LLAMA8, "Q3_XS", 4096, 1, "f16", GIB)


def test_judge_shows_the_prediction_beside_the_measurement():
    (model,) = judge(healthy()).models
    assert (model.predicted, model.processor_text) == ("100% GPU", "100% GPU")


def test_plan_command_lists_fits_and_json(runner):
    result = runner.invoke(app, ["plan", "--vram", "24", "--context", "8192", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    by = {(f["model"], f["quantization"]): f for f in doc["fits"]}
    assert by[("llama3.1:8b", "Q4_K_M")]["processor"] == "gpu"
    assert by[("llama3.1:70b", "Q4_K_M")]["processor"] == "split"
    text = runner.invoke(app, ["plan", "--vram", "24"]).output
    assert "llama3.1:8b    Q4_K_M" in text and "100% GPU" in text


@pytest.mark.parametrize(
    ("args", "message"),
    [(["plan"], "give --vram GiB"), (["plan", "--vram", "8", "--kv-cache", "q5"], "--kv-cache 'q5' is not allowed"),
     (["plan", "--vram", "0"], "--vram must be > 0")],
)
def test_plan_bad_usage_is_exit_2(runner, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.output


def test_plan_for_an_inventory_uses_each_hosts_discovered_gpu_memory(runner, write_inventory, tmp_path):
    inv = write_inventory("""
        all:
          children:
            native:
              hosts:
                gpu1: {}
                cpubox: {}
    """)
    facts = tmp_path / "facts"
    facts.mkdir()
    (facts / "gpu1.json").write_text(json.dumps({"gpus": [
        {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "memory_total_mib": 24564}]}))
    (facts / "cpubox.json").write_text(json.dumps({"gpus": []}))
    result = runner.invoke(app, ["plan", "-t", "native", "-i", str(inv), "--facts", str(facts), "--json"])
    assert result.exit_code == 0, result.output
    hosts = {h["host"]: h for h in json.loads(result.output)["hosts"]}
    assert hosts["gpu1"]["vram_gib"] == 24.0 and hosts["gpu1"]["fits"]
    assert {f["processor"] for f in hosts["gpu1"]["fits"]} >= {"gpu", "split"}
    assert hosts["cpubox"] == {**hosts["cpubox"], "vram_gib": 0.0, "fits": []}
    text = runner.invoke(app, ["plan", "-t", "native", "-i", str(inv), "--facts", str(facts)]).output
    assert "gpu1: 24 GiB GPU, context 4096" in text and "cpubox: no NVIDIA GPU found" in text
