#!/usr/bin/env bash
# The one way to fuzz: configure the MOE_FUZZ build (clang + libFuzzer, ASan +
# UBSan, the library with its real per-file ISA flags so the SIMD kernels are
# fuzzed too), build it, write the seeds (tests/fuzz/make_seeds.py) and run
# targets through ctest, each for SECONDS (CI runs them all for 40 s each).
#   tests/fuzz/run.sh [SECONDS] [TARGET...]
#   TARGET: fuzz_gguf fuzz_gguf_avx2 fuzz_model fuzz_tokenizer fuzz_tokenizer_load
#           fuzz_json fuzz_jinja fuzz_http (default: all)
# New corpus entries stay in build-fuzz/fuzz/corpus/TARGET; a failing input is
# written to build-fuzz/fuzz/TARGET-crash-* (add it to tests/fuzz/regress/TARGET
# once fixed). Needs clang with libFuzzer (Debian: clang, libclang-rt-dev).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
secs=${1:-300}
shift || true
out=${FUZZ_DIR:-$root/build-fuzz}
cmake -S "$root" -B "$out" -DCMAKE_C_COMPILER=clang -DMOE_FUZZ=ON -DMOE_DEFAULT_MODEL=OFF \
      -DMOE_FUZZ_SECONDS="$secs" >/dev/null
cmake --build "$out" -j2
# ctest adds the seed-writing fixture (fuzz_seeds) by itself
if [ $# -eq 0 ]; then
  ctest --test-dir "$out" --output-on-failure -L fuzz ${CTEST_ARGS:-}
else
  pattern=$(IFS='|'; echo "$*")
  ctest --test-dir "$out" --output-on-failure -R "^($pattern)\$" ${CTEST_ARGS:-}
fi
