"""The installable tool: the wheel carries the roles, playbooks and templates.

Builds the wheel from (a copy of) this checkout, installs it into a fresh virtual
environment and runs the installed `provision` from a directory outside the
repository. Nothing is downloaded: the wheel is built without build isolation with
the setuptools of the test environment, and the fresh environment borrows the
dependencies (ansible is 54 MB) from the test environment through a .pth file that
names its site-packages. A plain path line in a .pth file only appends that path to
sys.path; the .pth files inside it (among them the editable install's finder, which
would map `provisioner` back to this checkout) are not processed, and the fresh
environment's own site-packages comes first, so `provisioner` is the installed copy.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE, ROOT

pytestmark = pytest.mark.slow

TARGETS = ("native", "docker", "lxc", "kvm")
DATA = ("roles", "playbooks", "templates")
# What the build must not see: the test environment, old build output (setuptools
# copies whatever is left in build/ into the wheel), caches, rendered files.
_NOT_SOURCE = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc",
    ".pytest_cache", "rendered", ".provision",
)


def _run(args, *, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    # Nothing of the checkout may leak in through the environment.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _can_build_wheels() -> str | None:
    """Why this environment cannot build a wheel without build isolation, or None."""
    try:
        version = metadata.version("setuptools")
    except metadata.PackageNotFoundError:
        return "setuptools is not installed"
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    if major_minor < (70, 1):  # older setuptools needs the `wheel` package for bdist_wheel
        try:
            metadata.version("wheel")
        except metadata.PackageNotFoundError:
            return f"setuptools {version} < 70.1 and no `wheel` package"
    return None


def _shipped(directory: Path) -> set[str]:
    """Files of a top-level data directory that the wheel must carry (molecule scenarios excepted)."""
    return {
        p.relative_to(ROOT).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and "molecule" not in p.parts and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }


def _tree(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): p.read_text() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    reason = _can_build_wheels()
    if reason:
        pytest.fail(f"cannot build the wheel without downloading: {reason}; run .venv/bin/pip install -e '.[test]'")
    tmp = tmp_path_factory.mktemp("wheel")
    # A copy of the checkout, symlinks kept (provisioner/data/* -> ../../roles etc.):
    # the build writes build/ and *.egg-info into its source, not into the repository.
    src = tmp / "src"
    shutil.copytree(ROOT, src, symlinks=True, ignore=_NOT_SOURCE)
    dist = tmp / "dist"
    proc = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                 "--disable-pip-version-check", "-q", "-w", dist, src], cwd=tmp)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (whl,) = dist.glob("ollama_provisioner-*.whl")
    return whl


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh virtual environment with only the wheel installed; dependencies borrowed, not downloaded."""
    env = tmp_path_factory.mktemp("fresh") / "venv"
    proc = _run([sys.executable, "-m", "venv", "--without-pip", env], cwd=env.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    python = env / "bin" / "python"
    proc = _run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps",
                 "--disable-pip-version-check", "-q", wheel], cwd=env.parent)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    fresh_site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                           cwd=env.parent).stdout.strip())
    assert fresh_site.is_dir() and fresh_site.is_relative_to(env), fresh_site
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (fresh_site / "_borrowed_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return env


@pytest.fixture(scope="module")
def elsewhere(tmp_path_factory) -> Path:
    """A working directory outside the repository, with a copy of the example inventory."""
    where = tmp_path_factory.mktemp("elsewhere")
    assert not where.is_relative_to(ROOT)
    shutil.copytree(EXAMPLE, where / "inventory")
    return where


def test_wheel_carries_roles_playbooks_and_templates(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "provisioner/resources.py" in names
    assert "provisioner/data/roles/ollama_service/tasks/main.yml" in names
    assert "provisioner/data/templates/common/ollama.service.j2" in names
    assert "provisioner/data/playbooks/native.yml" in names
    for name in DATA:  # every file of the top-level directories, under provisioner/data/
        missing = {f for f in _shipped(ROOT / name) if f"provisioner/data/{f}" not in names}
        assert not missing, f"not in the wheel: {sorted(missing)}"
    assert not [n for n in names if "/molecule/" in n or "__pycache__" in n or n.endswith(".pyc")]
    # Only the provisioner package and its metadata: not tests/, benchmarks/ or the top-level directories.
    tops = {n.split("/")[0] for n in names}
    assert "provisioner" in tops and all(t == "provisioner" or t.endswith(".dist-info") for t in tops), tops


def test_installed_package_is_the_wheel_not_the_checkout(venv, elsewhere):
    proc = _run([venv / "bin" / "python", "-c",
                 "import sys, provisioner, provisioner.resources as r\n"
                 "print(provisioner.__file__)\n"
                 "for d in (r.roles_dir(), r.playbooks_dir(), r.templates_dir(), r.playbook('native.yml')): print(d)\n"
                 "print('editable finders:', [m for m in sys.modules if 'editable' in m])"],
                cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    *lines, finders = proc.stdout.splitlines()
    # The borrowed site-packages did not bring the editable install's finder with it.
    assert finders == "editable finders: []", finders
    paths = lines
    assert len(paths) == 5, proc.stdout
    for path in paths:
        assert path.startswith(str(venv)), paths
        assert not path.startswith(str(ROOT)), paths
        assert Path(path).exists(), path
    assert (Path(paths[1]) / "ollama_service" / "tasks" / "main.yml").is_file()


def test_installed_provision_renders_the_example_from_outside_the_repository(venv, elsewhere):
    out = elsewhere / "out"
    proc = _run([venv / "bin" / "provision", "render", "-i", elsewhere / "inventory", "--out", out, "--json"],
                cwd=elsewhere)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(proc.stdout)
    by_target = {h["target"]: h for h in doc["hosts"]}
    assert set(by_target) == set(TARGETS)
    for target, host in by_target.items():
        assert host["files"], target
        for f in host["files"]:
            path = Path(f["path"])
            assert path.is_file() and path.is_relative_to(out), (target, f)
    # The same files, byte for byte, as the checkout renders (tests/golden/<target>, pinned by test_render;
    # tests/golden/expose is another inventory's).
    golden = {k: v for k, v in _tree(ROOT / "tests" / "golden").items() if k.split("/")[0] in TARGETS}
    assert _tree(out) == golden


def test_installed_provision_help_runs_from_outside(venv, elsewhere):
    proc = _run([venv / "bin" / "provision", "--help"], cwd=elsewhere, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "render" in proc.stdout
