"""A real Docker host for tests: a Docker engine inside a throwaway systemd container (Docker in
Docker), installed by the project's own role docker_host, never the test machine's engine.

- ``dockerhost_image()``: once per test process, a container of ``local/debian-systemd:bookworm``
  gets the test host's cgroup2-view fixture, then role docker_host installs Debian's engine in it
  (a second converge must change nothing); the container is committed to
  ``local/ollama-provisioner-dockerhost:bookworm`` (and a tag of this process's own, dropped at exit).
  Every later host starts from that image, so the engine is installed once per session (≈ 30 s),
  not once per test.
- ``docker_host()``: a fresh host from that image, its engine answering, thrown away afterwards
  (``/var/lib/docker`` is an anonymous volume: the committed image holds no engine state).
- ``standin_toolkit_repo()``: once per process, a local apt repository laid out like NVIDIA's
  (flat, ``…/stable/deb/$(ARCH)`` and ``…/gpgkey``), signed with a throwaway GPG key and served over
  HTTP, holding a stand-in ``nvidia-container-toolkit`` package (tests/infra/nvidia-standins).
- ``converge()``: role docker_host on a host through Ansible's community.docker.docker connection;
  returns the run and the role's ``docker_host_result``.

THE TEST HOST'S FIXTURE, NOT THE PRODUCT: this machine is cgroup v1, where a Docker engine inside
a container cannot create its containers' cgroups (its v1 mounts are read-only). The test host
therefore carries a drop-in (CGROUP2_VIEW_DROPIN) that starts dockerd in a private mount namespace
with a cgroup2 view, and containerd masked so that dockerd runs its own. It is written here,
before the role runs; the role never writes it, and a real host never needs it.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from provisioner.progress import Quiet
from provisioner.runner import AnsibleRunner, RunResult
from provisioner.workspace import Workspace
from tests.native_host import DOCKER_HOST_IP, sh

ROOT = Path(__file__).resolve().parent.parent
BASE_IMAGE = "local/debian-systemd:bookworm"
DOCKERHOST_IMAGE = "local/ollama-provisioner-dockerhost:bookworm"
STANDINS = ROOT / "tests" / "infra" / "nvidia-standins"
STANDIN_TOOLKIT_VERSION = "0.0.0~standin1"
STANDIN_LOG = "/var/log/nvidia-container-toolkit-standin.log"
# A tiny image inside a test host (no registry is reachable): sleep and the C library.
SLEEPER = "local/sleeper"

# The test host's fixture (see the module's docstring): never written by the product.
CGROUP2_VIEW_DROPIN = "/etc/systemd/system/docker.service.d/cgroup2-view.conf"
CGROUP2_VIEW = """\
# TEST HOST FIXTURE (ollama-provisioner tests), not written by the product: this test machine is
# cgroup v1, so dockerd inside this container runs in a private mount namespace with a cgroup2
# view, and runs its own containerd (containerd.service is masked).
[Service]
ExecStart=
ExecStart=/usr/bin/unshare -m --propagation private /bin/sh -c "umount -l /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup && exec /usr/sbin/dockerd -H fd://"
"""

# Docker in Docker without --privileged (ENVIRONMENT.md): the capabilities dockerd needs, every
# device node allowed, its own cgroup namespace, and /var/lib/docker on a volume (overlay2 does
# not stack on the container's own overlay).
DIND_ARGS = [
    "--cgroupns=private", "--cap-add", "SYS_ADMIN", "--cap-add", "NET_ADMIN", "--cap-add", "MKNOD",
    "--cap-add", "NET_RAW", "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
    "--device-cgroup-rule", "c *:* rmw", "--device-cgroup-rule", "b *:* rmw",
    "--tmpfs", "/run", "--tmpfs", "/run/lock", "-v", "/var/lib/docker",
]


def _docker(*args: str, check: bool = True, input: bytes | None = None) -> str:
    proc = subprocess.run(["docker", *args], capture_output=True, input=input)
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} … exited {proc.returncode}: {proc.stderr.decode().strip()}")
    return proc.stdout.decode().strip()


def _wait(host: str, command: str, want: tuple[str, ...] | None, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        proc = subprocess.run(["docker", "exec", host, "sh", "-c", command], capture_output=True, text=True)
        if (proc.stdout.strip() in want) if want else proc.returncode == 0:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{host}: `{command}` never gave {want or 'exit 0'} in {timeout:.0f}s: "
                                 f"{proc.stdout.strip()} {proc.stderr.strip()}")
        time.sleep(0.3)


def install_test_host_fixture(host: str) -> None:
    """The cgroup2 view for dockerd and containerd masked: the test host's fixture, before any engine."""
    sh(host, f"mkdir -p {os.path.dirname(CGROUP2_VIEW_DROPIN)} && cat > {CGROUP2_VIEW_DROPIN} <<'EOF'\n"
             f"{CGROUP2_VIEW}EOF\nsystemctl mask containerd.service >/dev/null 2>&1; systemctl daemon-reload")


@contextmanager
def dind_container(image: str = BASE_IMAGE, prefix: str = "op-dkh") -> Iterator[str]:
    """A throwaway systemd container able to run a Docker engine; removed with its volume afterwards."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    _docker("run", "-d", "--name", name, "--hostname", name, *DIND_ARGS, image)
    try:
        _wait(name, "systemctl is-system-running", ("running", "degraded"), 60)
        if sh(name, f"test -e {CGROUP2_VIEW_DROPIN} && echo yes || echo no") == "no":
            install_test_host_fixture(name)
        yield name
    finally:
        subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)


# --- running the role -------------------------------------------------------------------------


@dataclass
class Converge:
    run: RunResult
    host: str
    result: dict[str, Any] = field(default_factory=dict)  # the role's docker_host_result

    @property
    def changed(self) -> int:
        return self.run.changed(self.host)


def _role_result(run_dir: Path) -> dict[str, Any]:
    for path in sorted(run_dir.glob("artifacts/*/job_events/*.json")):
        event = json.loads(path.read_text())
        res = (event.get("event_data") or {}).get("res") or {}
        if event.get("event") == "runner_on_ok" and "docker_host_result" in (res.get("ansible_facts") or {}):
            return res["ansible_facts"]["docker_host_result"]
    return {}


def converge(workdir: Path, host: str, *, check: bool = False, diff: bool = False, **role_vars: Any) -> Converge:
    """Role docker_host on ``host`` with ``role_vars``; raises ApplyError when the run fails."""
    workdir.mkdir(parents=True, exist_ok=True)
    inventory = {"all": {"hosts": {host: {"ansible_connection": "community.docker.docker",
                                          "ansible_python_interpreter": "/usr/bin/python3"}}}}
    (workdir / "inv.yml").write_text(yaml.safe_dump(inventory))
    play = [{"hosts": "all", "gather_facts": False, "roles": [{"role": "docker_host", **role_vars}]}]
    playbook = workdir / f"docker-host-{uuid.uuid4().hex[:6]}.yml"
    playbook.write_text(yaml.safe_dump(play, sort_keys=False))
    runner = AnsibleRunner(Workspace(workdir / "state"), workdir / "inv.yml", Quiet())
    run = runner.run(str(playbook), check=check, diff=diff)
    return Converge(run, host, _role_result(run.run_dir))


# --- the Docker host image, once per process --------------------------------------------------


@dataclass(frozen=True)
class DockerHostImage:
    image_id: str
    seconds: float  # the whole build: container, engine install by the role, re-converge, commit
    first: dict[str, Any]  # docker_host_result of the install
    first_changed: int
    second_changed: int
    enabled: str
    active: str
    ran_a_container: bool


@functools.cache
def dockerhost_image() -> DockerHostImage:
    """The engine installed by role docker_host on a fresh bookworm systemd container (Debian's
    packages), checked and committed as DOCKERHOST_IMAGE; built once per test process."""
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="op-dkh-image-"))
    try:
        with dind_container(prefix="op-dkh-build") as host:
            first = converge(work / "first", host)
            second = converge(work / "second", host)
            enabled = sh(host, "systemctl is-enabled docker.service", check=False)
            active = sh(host, "systemctl is-active docker.service", check=False)
            load_sleeper(host)
            ran = sh(host, f"docker run --rm {SLEEPER} /usr/bin/sleep 0 && echo ran", check=False) == "ran"
            sh(host, f"docker rmi -f {SLEEPER} >/dev/null; apt-get clean")
            # This process's own tag (dropped at exit) keeps its image while it runs, whatever a
            # test process beside it does with the shared tag.
            own = f"{DOCKERHOST_IMAGE}-{uuid.uuid4().hex[:8]}"
            old = _docker("image", "inspect", "-f", "{{.Id}}", DOCKERHOST_IMAGE, check=False)
            _docker("commit", host, own)
            atexit.register(_docker, "rmi", own, check=False)
            image_id = _docker("image", "inspect", "-f", "{{.Id}}", own)
            _docker("tag", image_id, DOCKERHOST_IMAGE)
            if old and old != image_id and _docker("image", "inspect", "-f", "{{len .RepoTags}}", old, check=False) == "0":
                _docker("rmi", old, check=False)  # an earlier session's build that nothing names any more
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return DockerHostImage(image_id, time.monotonic() - t0, first.result, first.changed, second.changed,
                           enabled, active, ran)


@contextmanager
def docker_host(prefix: str = "op-dkh") -> Iterator[str]:
    """A fresh Docker host (engine installed by the role, running, no containers, no daemon.json)."""
    image = dockerhost_image().image_id
    with dind_container(image, prefix) as host:
        _wait(host, "docker info >/dev/null 2>&1", None, 60)
        yield host


def load_sleeper(host: str) -> str:
    """A tiny image inside ``host``'s engine (sleep and the C library from the host's own root)."""
    sh(host, "tar -C / -cf - usr/bin/sleep usr/lib/x86_64-linux-gnu/libc.so.6 "
             "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 usr/lib64/ld-linux-x86-64.so.2 lib lib64 "
             f"| docker import - {SLEEPER} >/dev/null")
    return SLEEPER


def dockerd_pid(host: str) -> tuple[str, str]:
    """dockerd's main PID and start time inside ``host`` (a restart changes both)."""
    return (sh(host, "systemctl show -p MainPID --value docker.service"),
            sh(host, "systemctl show -p ExecMainStartTimestampMonotonic --value docker.service"))


# --- the stand-in NVIDIA Container Toolkit repository -----------------------------------------


@dataclass(frozen=True)
class StandinRepo:
    directory: Path
    url: str  # as containers on Docker's default bridge reach it
    repo_url: str  # docker_host_toolkit_repo_url (NVIDIA's layout, $(ARCH) for apt)
    key_url: str  # docker_host_toolkit_key_url
    version: str
    fingerprint: str


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def build_standin_package(out: Path) -> Path:
    """nvidia-container-toolkit_<stand-in version>_amd64.deb carrying the three stand-ins."""
    tree = out / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "usr/bin").mkdir(parents=True)
    for name in ("nvidia-container-runtime-hook", "nvidia-container-runtime", "nvidia-ctk"):
        shutil.copy(STANDINS / name, tree / "usr/bin" / name)
        (tree / "usr/bin" / name).chmod(0o755)
    (tree / "DEBIAN/control").write_text(
        "Package: nvidia-container-toolkit\n"
        f"Version: {STANDIN_TOOLKIT_VERSION}\n"
        "Architecture: amd64\n"
        "Maintainer: ollama-provisioner tests <tests@invalid>\n"
        "Section: utils\nPriority: optional\n"
        "Description: STAND-IN for the NVIDIA Container Toolkit (ollama-provisioner tests only)\n"
        " nvidia-container-runtime-hook (injects nothing, exits 0), nvidia-container-runtime\n"
        " (records the call and execs runc) and nvidia-ctk (--version only). No GPU, no driver.\n")
    deb = out / f"nvidia-container-toolkit_{STANDIN_TOOLKIT_VERSION}_amd64.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(tree), str(deb)],
                   check=True, capture_output=True)
    shutil.rmtree(tree)
    return deb


def _control(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb)], check=True, capture_output=True, text=True).stdout.strip()


def build_standin_repo(root: Path) -> tuple[Path, str]:
    """A flat apt repository like NVIDIA's under root/libnvidia-container/stable/deb/amd64, signed
    (InRelease and Release.gpg) with a throwaway key whose armoured public half is root/libnvidia-container/gpgkey."""
    repo = root / "libnvidia-container" / "stable" / "deb" / "amd64"
    repo.mkdir(parents=True)
    deb = build_standin_package(repo)
    data = deb.read_bytes()
    stanza = (f"{_control(deb)}\nFilename: ./{deb.name}\nSize: {len(data)}\n"
              f"MD5sum: {hashlib.md5(data).hexdigest()}\nSHA256: {hashlib.sha256(data).hexdigest()}\n")
    (repo / "Packages").write_text(stanza)
    (repo / "Packages.gz").write_bytes(gzip.compress(stanza.encode()))
    lines = ["Origin: ollama-provisioner tests", "Label: nvidia-container-toolkit stand-in",
             "Architectures: amd64", f"Date: {formatdate(usegmt=True)}", "SHA256:"]
    for name in ("Packages", "Packages.gz"):
        blob = (repo / name).read_bytes()
        lines.append(f" {hashlib.sha256(blob).hexdigest()} {len(blob)} {name}")
    (repo / "Release").write_text("\n".join(lines) + "\n")

    home = Path(tempfile.mkdtemp(prefix="op-gpg-"))
    home.chmod(0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}

    def gpg(*args: str) -> str:
        return subprocess.run(["gpg", "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
                               *args], check=True, capture_output=True, text=True, env=env).stdout

    try:
        gpg("--quick-gen-key", "ollama-provisioner test apt repository (throwaway) <tests@invalid>",
            "ed25519", "sign", "1d")
        fingerprint = next(line.split(":")[9] for line in gpg("--with-colons", "--list-keys").splitlines()
                           if line.startswith("fpr:"))
        gpg("--clearsign", "-o", str(repo / "InRelease"), str(repo / "Release"))
        gpg("-abs", "-o", str(repo / "Release.gpg"), str(repo / "Release"))
        (root / "libnvidia-container" / "gpgkey").write_text(gpg("--armor", "--export", fingerprint))
    finally:
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)
        shutil.rmtree(home, ignore_errors=True)
    return repo, fingerprint


@functools.cache
def standin_toolkit_repo() -> StandinRepo:
    """Build the stand-in repository and serve it over HTTP for the rest of the process."""
    root = Path(tempfile.mkdtemp(prefix="op-standin-apt-"))
    _, fingerprint = build_standin_repo(root)
    handler = functools.partial(_Quiet, directory=str(root))
    server = ThreadingHTTPServer(("0.0.0.0", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def _stop() -> None:
        server.shutdown()
        server.server_close()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(_stop)
    url = f"http://{DOCKER_HOST_IP}:{server.server_address[1]}"
    return StandinRepo(root, url, f"{url}/libnvidia-container/stable/deb/$(ARCH)",
                       f"{url}/libnvidia-container/gpgkey", STANDIN_TOOLKIT_VERSION, fingerprint)


def project_fragment(directory: Path, **extra: Any) -> Path:
    """The daemon.json fragment the project renders for a GPU host (templates/docker/daemon.json.j2),
    plus ``extra`` keys; written to ``directory`` and returned (docker_host_daemon_fragment)."""
    fragment = {"runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
                "exec-opts": ["native.cgroupdriver=cgroupfs"], **extra}
    return write_fragment(directory, fragment)


def write_fragment(directory: Path, fragment: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"daemon.json.fragment.{uuid.uuid4().hex[:6]}"
    path.write_text(json.dumps(fragment, indent=2) + "\n")
    return path


# --- a real Ollama image, built once per process from the PyPI-built release archives -----------

OLLAMA_IMAGE = "local/ollama"
# An image of the same server whose entrypoint never starts it: its healthcheck never passes.
NEVER_HEALTHY_TAG = "never-healthy"
_OLLAMA_DOCKERFILE = """\
FROM {base}
# The release archive laid out as Ollama's (bin/ollama -> ../lib/ollama/ollama), as the official image has it.
ADD ollama-linux-amd64.tgz /usr/local/
ENV OLLAMA_HOST=0.0.0.0:11434 HOME=/root
EXPOSE 11434
ENTRYPOINT ["/usr/local/bin/ollama"]
CMD ["serve"]
"""


@functools.cache
def ollama_images() -> tuple[str, ...]:
    """local/ollama:<VERSION_A> and :<VERSION_B> from www/ and www/next/ (tests/infra/build-ollama.sh), and
    :never-healthy (A, its server never started), built FROM the local bookworm base on this machine's
    engine (Docker Hub is out of reach); once per process, cached by the engine's build cache."""
    from tests.native_host import VERSION_A, VERSION_B
    from tests.real_ollama import STATE

    built = []
    for tag, archive in ((VERSION_A, STATE / "www" / "ollama-linux-amd64.tgz"),
                         (VERSION_B, STATE / "www" / "next" / "ollama-linux-amd64.tgz")):
        with tempfile.TemporaryDirectory(prefix="op-ollama-image-") as ctx:
            shutil.copy(archive, Path(ctx, "ollama-linux-amd64.tgz"))
            Path(ctx, "Dockerfile").write_text(_OLLAMA_DOCKERFILE.format(base=BASE_IMAGE))
            _docker("build", "-q", "-t", f"{OLLAMA_IMAGE}:{tag}", ctx)
        built.append(f"{OLLAMA_IMAGE}:{tag}")
    with tempfile.TemporaryDirectory(prefix="op-ollama-image-") as ctx:
        Path(ctx, "Dockerfile").write_text(f'FROM {OLLAMA_IMAGE}:{VERSION_A}\n'
                                           'ENTRYPOINT ["/bin/sh", "-c", "exec sleep infinity"]\n')
        _docker("build", "-q", "-t", f"{OLLAMA_IMAGE}:{NEVER_HEALTHY_TAG}", ctx)
    built.append(f"{OLLAMA_IMAGE}:{NEVER_HEALTHY_TAG}")
    return tuple(built)


# --- a real local registry (Debian's docker-registry) holding those images ----------------------

REGISTRY_CONFIG = """\
version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {root}}}
  delete: {{enabled: true}}
http:
  addr: 0.0.0.0:{port}
"""


@dataclass(frozen=True)
class Registry:
    address: str  # HOST:PORT as the test hosts reach it (Docker's default bridge), over plain HTTP
    repository: str  # ollama_docker_image: ADDRESS/ollama

    def image(self, tag: str) -> str:
        return f"{self.repository}:{tag}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]


@functools.cache
def registry() -> Registry:
    """Debian's docker-registry (the real Distribution registry) serving on every interface of this
    machine, once per test process, with ollama_images() pushed to it by this machine's engine
    (which trusts a registry on 127.0.0.1 over HTTP). The test hosts pull from DOCKER_HOST_IP:PORT,
    which their engine reaches over HTTP only through daemon.json's insecure-registries: the
    project's merge adds it. Storage is kept under the state directory, so a later session pushes
    only what changed."""
    from tests.real_ollama import STATE

    images = ollama_images()
    port = _free_port()
    root = STATE / "registry"
    root.mkdir(parents=True, exist_ok=True)
    config = root / f"config-{port}.yml"
    config.write_text(REGISTRY_CONFIG.format(root=root / "data", port=port))
    log = open(root / "registry.log", "ab")
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=log)
    atexit.register(proc.terminate)
    atexit.register(config.unlink, missing_ok=True)
    deadline = time.monotonic() + 30
    while True:
        try:
            import urllib.request

            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"docker-registry did not answer on port {port}: see {root / 'registry.log'}")
            time.sleep(0.2)
    for image in images:
        local = f"127.0.0.1:{port}/ollama:{image.rsplit(':', 1)[1]}"
        _docker("tag", image, local)
        _docker("push", "-q", local)
        _docker("rmi", local)
    address = f"{DOCKER_HOST_IP}:{port}"
    return Registry(address=address, repository=f"{address}/ollama")


def load_images(host: str, *images: str) -> None:
    """Move images from this machine's engine into ``host``'s (shared layers travel once)."""
    save = subprocess.Popen(["docker", "save", *images], stdout=subprocess.PIPE)
    load = subprocess.run(["docker", "exec", "-i", host, "docker", "load", "-q"], stdin=save.stdout,
                          capture_output=True)
    save.stdout.close()
    if save.wait() != 0 or load.returncode != 0:
        raise AssertionError(f"loading {images} into {host} failed: {load.stderr.decode().strip()}")


# --- a long-lived Docker host for the Quick start and the molecule scenario ---------------------


def up(name: str, hostname: str | None = None) -> None:
    """Start a Docker host named ``name`` (kept until ``down``) with the Ollama images loaded into its
    engine; one already running is kept as it is."""
    running = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", name], capture_output=True, text=True)
    if running.stdout.strip() == "true":
        return
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)
    print(f"docker host: building the Docker host image and the Ollama images (once), starting {name}", flush=True)
    # An engine image left by an earlier build serves as well: docker.yml converges role docker_host on it.
    image = _docker("image", "inspect", "-f", "{{.Id}}", DOCKERHOST_IMAGE, check=False) or dockerhost_image().image_id
    images = ollama_images()
    _docker("run", "-d", "--name", name, "--hostname", hostname or name, *DIND_ARGS, image)
    _wait(name, "docker info >/dev/null 2>&1", None, 90)
    load_images(name, *images)


def down(name: str) -> None:
    """Remove the Docker host ``name`` and its engine's volume."""
    subprocess.run(["docker", "rm", "-f", "-v", name], capture_output=True)


if __name__ == "__main__":
    import sys

    usage = "usage: python -m tests.docker_host up NAME [HOSTNAME] | down NAME"
    if len(sys.argv) < 3 or sys.argv[1] not in ("up", "down"):
        sys.exit(usage)
    if sys.argv[1] == "up":
        up(*sys.argv[2:4])
    else:
        down(sys.argv[2])
