"""ollama-provisioner: install Ollama on GPU machines and prove it runs on the GPU."""

__version__ = "0.1.0"
