"""Predict, before loading, whether a model runs 100% on a GPU or splits with the CPU.

Memory a loaded model needs on the GPU, as Ollama lays it out:
  weights            parameters x bits per weight of the quantisation / 8
  KV cache           2 (K and V) x layers x KV heads x head size x context x parallel x bytes per element
  compute overhead   a fixed allowance for the compute graph and CUDA context

The KV cache grows with OLLAMA_CONTEXT_LENGTH x OLLAMA_NUM_PARALLEL, which is why an
upgrade that raises the default context can push a model off the GPU (ollama#14073,
#14116). This is an estimate: Ollama's own scheduler has the last word, and
`provision verify` measures what really happened.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 2**30
OVERHEAD_BYTES = 512 * 2**20  # compute graph + CUDA context allowance

# Effective bits per weight of common GGUF quantisations (block scales included).
BITS_PER_WEIGHT = {
    "Q4_0": 4.5, "Q4_1": 5.0, "Q4_K_S": 4.58, "Q4_K_M": 4.85, "Q5_0": 5.5, "Q5_K_M": 5.69,
    "Q6_K": 6.56, "Q8_0": 8.5, "F16": 16.0, "BF16": 16.0,
}
# Bytes per element of the KV cache (OLLAMA_KV_CACHE_TYPE); q8_0/q4_0 carry block scales.
KV_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}


@dataclass(frozen=True)
class Architecture:
    name: str
    params_b: float  # billions of parameters
    layers: int
    kv_heads: int
    head_dim: int


# Published configurations (config.json of each model).
CATALOGUE: tuple[Architecture, ...] = (
    Architecture("llama3.2:1b", 1.24, 16, 8, 64),
    Architecture("llama3.2:3b", 3.21, 28, 8, 128),
    Architecture("llama3.1:8b", 8.03, 32, 8, 128),
    Architecture("mistral:7b", 7.25, 32, 8, 128),
    Architecture("qwen2.5:7b", 7.62, 28, 4, 128),
    Architecture("gemma2:9b", 9.24, 42, 8, 256),
    Architecture("qwen2.5:14b", 14.8, 48, 8, 128),
    Architecture("gemma2:27b", 27.2, 46, 16, 128),
    Architecture("qwen2.5:32b", 32.8, 64, 8, 128),
    Architecture("mixtral:8x7b", 46.7, 32, 8, 128),
    Architecture("llama3.1:70b", 70.6, 80, 8, 128),
    Architecture("qwen2.5:72b", 72.7, 80, 8, 128),
)


@dataclass(frozen=True)
class Fit:
    model: str
    quantization: str
    context: int
    parallel: int
    kv_cache_type: str
    weights_bytes: int
    kv_bytes: int
    total_bytes: int
    vram_bytes: int
    processor: str  # gpu | split | cpu
    gpu_percent: int

    @property
    def text(self) -> str:
        if self.processor == "gpu":
            return "100% GPU"
        if self.processor == "cpu":
            return "100% CPU"
        return f"{100 - self.gpu_percent}%/{self.gpu_percent}% CPU/GPU"


def find(name: str) -> Architecture | None:
    base = name if ":" in name else f"{name}:latest"
    for arch in CATALOGUE:
        if arch.name == base or base.startswith(arch.name + "-"):
            return arch
    return None


def find_by_details(family: str | None, parameter_size: str | None) -> Architecture | None:
    """Match /api/ps details (family 'llama', parameter_size '3.2B') to the catalogue."""
    if not family or not parameter_size:
        return None
    m = re.match(r"([\d.]+)\s*([BM])", parameter_size.upper())
    if not m:
        return None
    params_b = float(m.group(1)) / (1000 if m.group(2) == "M" else 1)
    candidates = [a for a in CATALOGUE if a.name.startswith(family.lower())]
    close = [a for a in candidates if abs(a.params_b - params_b) <= 0.06 * a.params_b]
    return min(close, key=lambda a: abs(a.params_b - params_b)) if close else None


def predict(arch: Architecture, quantization: str, context: int, parallel: int,
            kv_cache_type: str, vram_bytes: int) -> Fit:
    quant = quantization.upper()
    if quant not in BITS_PER_WEIGHT:
        raise ValueError(f"unknown quantisation {quantization!r}; known: {', '.join(BITS_PER_WEIGHT)}")
    if kv_cache_type not in KV_BYTES:
        raise ValueError(f"unknown KV cache type {kv_cache_type!r}; use f16, q8_0 or q4_0")
    weights = int(arch.params_b * 1e9 * BITS_PER_WEIGHT[quant] / 8)
    kv = int(2 * arch.layers * arch.kv_heads * arch.head_dim * context * parallel * KV_BYTES[kv_cache_type])
    total = weights + kv + OVERHEAD_BYTES
    usable = max(vram_bytes - OVERHEAD_BYTES, 0)
    if total <= vram_bytes:
        processor, pct = "gpu", 100
    else:
        # Ollama offloads whole layers: the share that fits, rounded down to a layer.
        per_layer = (weights + kv) / arch.layers
        layers_on_gpu = min(int(usable // per_layer), arch.layers)
        pct = int(layers_on_gpu / arch.layers * 100)
        processor = "cpu" if layers_on_gpu == 0 else "split"
    return Fit(arch.name, quant, context, parallel, kv_cache_type, weights, kv, total, vram_bytes, processor, pct)


def plan(vram_gib: float, context: int = 4096, parallel: int = 1, kv_cache_type: str = "f16",
         quantizations: tuple[str, ...] = ("Q4_K_M", "Q8_0", "F16")) -> list[Fit]:
    vram = int(vram_gib * GIB)
    return [predict(a, q, context, parallel, kv_cache_type, vram) for a in CATALOGUE for q in quantizations]
