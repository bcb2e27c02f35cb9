"""docker: Ollama in a container on the host, with the NVIDIA runtime and a GPU request."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, field_validator

from .. import fields
from ..preflight import NVIDIA_VENDOR_ID
from .base import FileSpec, Place, TargetModule

if TYPE_CHECKING:
    from ..facts import HostFacts
    from ..settings import HostSettings


class DockerSettings(BaseModel):
    """The Docker concern: image, volume, container and compose project."""

    model_config = ConfigDict(extra="ignore", validate_default=True, frozen=True)

    ollama_docker_image: str = "ollama/ollama"
    ollama_docker_tag: str | None = None
    ollama_docker_volume: str = "ollama"
    ollama_docker_container_name: str = "ollama"
    ollama_docker_project_dir: str = "/opt/ollama"
    ollama_docker_gpus: str = "all"

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

    @property
    def docker_volume_is_bind(self) -> bool:
        return self.ollama_docker_volume.startswith("/")

    @property
    def docker_project_dir(self) -> str:
        return self.ollama_docker_project_dir


class DockerTarget(TargetModule):
    name = "docker"
    description = "Ollama in a Docker container with the NVIDIA runtime and a GPU request"
    settings_models = (DockerSettings,)
    # The image tag follows the Ollama release unless set.
    derived = {"docker_tag": lambda s: s.ollama_docker_tag or s.ollama_version}
    files = (
        FileSpec("docker/compose.yaml.j2", "host", "{docker_project_dir}/compose.yaml"),
        FileSpec("docker/daemon.json.j2", "host", "/etc/docker/daemon.json",
                 method="merge", out="etc/docker/daemon.json.fragment"),
    )
    fixes = {
        "no-device-node": "configure the NVIDIA runtime (`nvidia-ctk runtime configure --runtime=docker` and restart "
                          "docker) and request the GPU in the compose file (deploy.resources.reservations.devices, "
                          "driver: nvidia); `provision --target docker` does both",
        "nvidia-smi-missing": "the NVIDIA runtime injects nvidia-smi: configure it "
                              "(`nvidia-ctk runtime configure --runtime=docker`)",
    }

    def context(self, settings: HostSettings, facts: HostFacts) -> dict[str, Any]:
        # The NVIDIA runtime and the cgroupfs driver only where there is a GPU to hand to a container.
        gpu = bool(facts.nvidia_driver_version) or any(d.vendor_id == NVIDIA_VENDOR_ID for d in facts.pci_devices)
        return {"has_gpu": gpu}

    def server_environment(self, settings: HostSettings) -> dict[str, str]:
        # Inside the container the server listens on every interface; the compose file publishes
        # the port on ollama_listen_address only. Models live in the volume at the image's default.
        return settings.ollama.environment(listen="0.0.0.0:11434", models_dir=None)

    def place(self, settings: HostSettings) -> Place:
        name = settings.ollama_docker_container_name
        return Place(name=f"{settings.host}/docker-{name}", description=f"container {name} on {settings.host}",
                     connection={"ansible_connection": "community.docker.docker", "ansible_host": name})


TARGET = DockerTarget()
