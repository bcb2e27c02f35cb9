"""Shared fixtures: the project's paths, small inventories written per test, a CLI runner."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "inventories" / "example"


def pytest_collection_modifyitems(config, items):
    """Tests marked gpu need an NVIDIA GPU: deselected where nvidia-smi is absent."""
    if shutil.which("nvidia-smi"):
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (nvidia-smi not found)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def provision(runner, tmp_path, monkeypatch):
    """Run `provision ARGS` from a scratch directory (its .provision/ run directories stay there)."""
    from provisioner.cli import app

    monkeypatch.chdir(tmp_path)
    return lambda *args: runner.invoke(app, [str(a) for a in args])


@pytest.fixture
def write_inventory(tmp_path):
    """Write hosts.yml (and optional group_vars/host_vars files) from YAML text; return the dir."""

    def _write(hosts: str, files: dict[str, str] | None = None) -> Path:
        inv = tmp_path / "inv"
        inv.mkdir(exist_ok=True)
        (inv / "hosts.yml").write_text(textwrap.dedent(hosts))
        for rel, text in (files or {}).items():
            path = inv / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(textwrap.dedent(text))
        return inv

    return _write
