#!/bin/sh
# Cross-build moe for AArch64 and run the C unit tests under qemu-user, so the
# NEON kernel set (src/kernels_neon.c) is tested on an x86 machine. Not part
# of the default ctest run (CI has no cross compiler). Needs:
#   apt-get install gcc-aarch64-linux-gnu qemu-user
# Usage: tests/cross/run_neon.sh [build-dir]   (default: build-arm)
#   MOE_CROSS_PY=1 also runs the Python golden and fidelity tests with the
#   aarch64 CLI under qemu (slow).
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${1:-"$root/build-arm"}
sysroot=/usr/aarch64-linux-gnu
qemu="qemu-aarch64 -L $sysroot"

for tool in aarch64-linux-gnu-gcc qemu-aarch64; do
    command -v $tool >/dev/null || { echo "run_neon.sh: $tool not found (apt-get install gcc-aarch64-linux-gnu qemu-user)" >&2; exit 2; }
done

cmake -S "$root" -B "$build" -DCMAKE_TOOLCHAIN_FILE="$root/cmake/aarch64-linux-gnu.cmake" \
      -DCMAKE_BUILD_TYPE=Release -DMOE_WERROR=ON >/dev/null
cmake --build "$build" -j2

# ctest runs each C test through CMAKE_CROSSCOMPILING_EMULATOR (qemu).
ctest --test-dir "$build" -R '^test_' -j2 --output-on-failure

# The neon set must be listed (the default qemu CPU has the dot-product
# extension) and dropped on a CPU without it (Cortex-A53: ARMv8.0).
$qemu "$build/test_kernels" | grep -q 'kernel sets on this CPU: scalar neon' \
    || { echo "run_neon.sh: neon kernel set not available under qemu" >&2; exit 1; }
$qemu -cpu cortex-a53 "$build/test_kernels" | grep -q 'kernel sets on this CPU: scalar (' \
    || { echo "run_neon.sh: neon kernel set offered on a CPU without dotprod" >&2; exit 1; }
echo "run_neon.sh: dispatch ok (neon with dotprod, scalar on cortex-a53)"

if [ "${MOE_CROSS_PY:-0}" = 1 ]; then
    wrapper="$build/moe-qemu"
    printf '#!/bin/sh\nexec %s "%s" "$@"\n' "$qemu" "$build/moe" > "$wrapper"
    chmod +x "$wrapper"
    cd "$root/tests/py"
    MOE_BIN="$wrapper" MOE_ROOT="$root" MOE_SHARED="${MOE_SHARED:-$root/../shared}" \
        MOE_WORK="$build/testwork" PYTHONDONTWRITEBYTECODE=1 \
        python3 -m unittest -v test_golden test_fidelity
fi
