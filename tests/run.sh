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
set +e
if [ "$#" -gt 0 ]; then
  echo "=== infrastructure tests"
  .venv/bin/pytest -q -m infra --durations=25 "$@"
  rc=$?
  # 5 = no test selected (e.g. a -k that matches only unit tests): not a failure.
  [ "$rc" -eq 5 ] && rc=0
  exit "$rc"
fi
# The whole suite: the kvm module (one VM under an emulated CPU, about a third of the time, mostly
# waiting on the guest) runs in a second pytest beside the rest; it shares nothing with them but
# the machine (its own VM, libvirt network, HTTP server port and workspace).
echo "=== infrastructure tests (tests/test_kvm.py beside the rest; its report follows theirs)"
kvm_log=$(mktemp)
.venv/bin/pytest -q -m infra -p no:cacheprovider --durations=10 tests/test_kvm.py >"$kvm_log" 2>&1 &
kvm_pid=$!
.venv/bin/pytest -q -m infra --durations=25 --ignore=tests/test_kvm.py
rc=$?
wait "$kvm_pid"
kvm_rc=$?
echo "=== tests/test_kvm.py"
cat "$kvm_log"
rm -f "$kvm_log"
[ "$rc" -eq 0 ] && rc=$kvm_rc
exit "$rc"
