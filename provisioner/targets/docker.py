"""docker: Ollama in a container on the host, with the NVIDIA runtime and a GPU request."""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .. import fields
from .base import FileSpec, Place, TargetModule, proxy_files

if TYPE_CHECKING:
    from ..facts import HostFacts
    from ..preflight import HostPreflight
    from ..settings import HostSettings


# HOST[:PORT] as daemon.json's insecure-registries takes it (a name, an IPv4 address or a CIDR).
_REGISTRY = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:\d{1,5})?|\d{1,3}(\.\d{1,3}){3}/\d{1,2}")


class DockerSettings(BaseModel):
    """The Docker concern: image, volume, container and compose project."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    ollama_docker_image: str = "ollama/ollama"
    ollama_docker_tag: str | None = None
    ollama_docker_volume: str = "ollama"
    ollama_docker_container_name: str = "ollama"
    ollama_docker_project_dir: str = "/opt/ollama"
    ollama_docker_gpus: str = "all"
    # Registries the engine reaches over plain HTTP (a mirror on the LAN): merged into daemon.json's
    # insecure-registries next to the user's own entries.
    ollama_docker_insecure_registries: list[str] = Field(default_factory=list)

    @field_validator("ollama_docker_project_dir")
    @classmethod
    def _abs(cls, v: str) -> str:
        return fields.abs_path(v)

    @field_validator("ollama_docker_gpus", mode="before")
    @classmethod
    def _gpus(cls, v: Any) -> str:
        text = str(v)
        if text == "all" or (text.isdigit() and int(text) > 0):
            return text
        raise ValueError("must be 'all' or a number of GPUs greater than 0")

    @field_validator("ollama_docker_insecure_registries", mode="before")
    @classmethod
    def _registries(cls, v: Any) -> list[str]:
        items = [v] if isinstance(v, str) else list(v or [])
        for item in items:
            if not isinstance(item, str) or not _REGISTRY.fullmatch(item):
                raise ValueError(f"{item!r} is not a registry address: give HOST or HOST:PORT "
                                 "(e.g. 192.168.1.10:5000), without http:// or a path")
        return items

    @property
    def docker_volume_is_bind(self) -> bool:
        return self.ollama_docker_volume.startswith("/")

    @property
    def docker_project_dir(self) -> str:
        return self.ollama_docker_project_dir


# The label that marks a container as the project's, given to the compose template and to role
# ollama_container from here: a container of the same name without it is someone else's and is
# never replaced or removed.
MANAGED_LABEL = "org.ollama-provisioner.managed"
COMPOSE_TEMPLATE = "docker/compose.yaml.j2"
# What the verification asks Docker (evidence.DockerView), as Go templates printing JSON.
INSPECT_CONTAINER = '{"device_requests":{{json .HostConfig.DeviceRequests}},"runtime":{{json .HostConfig.Runtime}}}'
INSPECT_ENGINE = ('{"runtimes":{{json .Runtimes}},"cgroup_driver":{{json .CgroupDriver}},'
                  '"server_version":{{json .ServerVersion}}}')


def _go_template(template: str) -> str:
    """A Go template as one single-quoted shell word whose braces Ansible's templating leaves alone:
    each '{{' becomes '{' '' '{' (the shell joins the quoted pieces back)."""
    return "'" + template.replace("'", "'\\''").replace("{{", "{''{") + "'"

DAEMON_FRAGMENT = "etc/docker/daemon.json.fragment"


class DockerTarget(TargetModule):
    name = "docker"
    description = "Ollama in a Docker container with the NVIDIA runtime and a GPU request"
    apply_ready = True
    settings_models = (DockerSettings,)
    # The image tag follows the Ollama release unless set.
    derived = {"docker_tag": lambda s: s.ollama_docker_tag or s.ollama_version}
    files = (
        FileSpec(COMPOSE_TEMPLATE, "host", "{docker_project_dir}/compose.yaml"),
        FileSpec("docker/daemon.json.j2", "host", "/etc/docker/daemon.json",
                 method="merge", out=DAEMON_FRAGMENT),
        # Exposed, the TLS and token proxy runs on the Docker host (role ollama_proxy, the same nginx
        # instance as on every target) in front of the port the compose file publishes on loopback.
        *proxy_files("host"),
    )
    fixes = {
        "no-device-node": "on a host with an NVIDIA GPU and driver, configure the NVIDIA runtime and request the GPU in "
                          "the compose file (deploy.resources.reservations.devices, driver: nvidia); `provision --target "
                          "docker` does both, merging runtimes.nvidia into daemon.json with your keys kept (by hand: "
                          "`nvidia-ctk runtime configure --runtime=docker`, which rewrites the file, then restart docker)",
        "nvidia-smi-missing": "the NVIDIA runtime injects nvidia-smi: configure it "
                              "(`nvidia-ctk runtime configure --runtime=docker`)",
        "driver-mismatch": "the NVIDIA runtime mounts the host's driver libraries into the container, so they "
                           "follow the host: reboot the host after a driver upgrade (the loaded kernel module is "
                           "still the old one), then recreate the container (`docker compose up -d "
                           "--force-recreate` in the project directory, or `provision --target docker`)",
    }

    def context(self, settings: HostSettings, facts: HostFacts) -> dict[str, Any]:
        # The NVIDIA runtime and the cgroupfs driver only where there is a GPU to hand to a container.
        return {"has_gpu": facts.has_nvidia_gpu, "managed_label": MANAGED_LABEL}

    def server_environment(self, settings: HostSettings) -> dict[str, str]:
        # Inside the container the server listens on every interface; the compose file publishes
        # the port on ollama_listen_address only. Models live in the volume at the image's default.
        return settings.ollama.environment(listen="0.0.0.0:11434", models_dir=None)

    def place(self, settings: HostSettings) -> Place:
        # Ansible reaches the host itself; what runs inside the container goes through `docker exec`
        # (evidence_commands), and the API is the port the compose file publishes on the host.
        name = settings.ollama_docker_container_name
        return Place(name=settings.host, description=f"container {name} on {settings.host}")

    def evidence_commands(self, settings: HostSettings) -> dict[str, str]:
        name = shlex.quote(settings.ollama_docker_container_name)
        # docker logs --since takes a Unix time without the "@" the role prefixes.
        return {
            "log_command": f'__ollama_docker_logs() {{ docker logs --since "${{1#@}}" {name}; }}; __ollama_docker_logs',
            "env_command": f"docker inspect --type container -f {_go_template('{{range .Config.Env}}{{println .}}{{end}}')} {name}",
            "exec": f"docker exec -i {name}",
            # One JSON line for the container (its GPU request and runtime), one for its engine.
            "inspect_command": (
                f"docker inspect --type container -f {_go_template(INSPECT_CONTAINER)} {name}; "
                f"docker info -f {_go_template(INSPECT_ENGINE)}"),
        }

    def host_vars(self, settings: HostSettings, checked: HostPreflight | None) -> dict[str, Any]:
        gpu = bool(checked and not checked.cpu_only)
        return {
            **super().host_vars(settings, checked),
            "docker_host_gpu": gpu,
            # The rendered files, relative to OUT/<host>/ (playbooks/docker.yml joins them to it).
            "provision_docker_daemon_fragment": f"host/{DAEMON_FRAGMENT}",
            "ollama_container_name": settings.ollama_docker_container_name,
            "ollama_container_label": MANAGED_LABEL,
            "ollama_container_project_dir": settings.ollama_docker_project_dir,
            "provision_docker_compose_file": f"host{settings.ollama_docker_project_dir}/compose.yaml",
            "ollama_container_image": f"{settings.ollama_docker_image}:{settings.docker_tag}",
            "ollama_container_volume": settings.ollama_docker_volume,
            "ollama_container_api_url": settings.api_url,
            "ollama_container_publish_address": settings.listen_host.strip("[]") or "0.0.0.0",
            "ollama_container_publish_port": settings.listen_port,
            "ollama_container_models": [m.model_dump(by_alias=True, exclude_none=True) for m in settings.ollama_models],
            "ollama_container_keep_alive": settings.ollama_keep_alive,
        }

    def uninstall_kept(self, purge: bool, destroy: bool = False, revert_host: bool = False) -> str:
        if purge:
            return "the container and its models volume were removed"
        return "the container was removed; its models volume was kept (--purge removes it)"


TARGET = DockerTarget()
