#!/usr/bin/env bash
# The whole test suite on a fresh machine of this project's kind (Debian 12, root):
# install what the tests need (apt + pip), start the real services (Docker engine,
# LXC bridge, libvirtd), then run pytest: fast unit tests first, then the tests
# that use real infrastructure. Extra arguments go to pytest.
#
# Usage: bash tests/run.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/infra/bootstrap.sh
bash tests/infra/services.sh
bash tests/infra/systemd-image.sh
bash tests/infra/build-ollama.sh
echo "=== unit tests"
.venv/bin/pytest -q -m "not infra" "$@"
echo "=== infrastructure tests"
set +e
.venv/bin/pytest -q -m infra --durations=25 "$@"
rc=$?
set -e
# 5 = no test selected (e.g. a -k that matches only unit tests): not a failure.
[ "$rc" -eq 5 ] && rc=0
exit "$rc"
