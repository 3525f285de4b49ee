#!/usr/bin/env bash
# Build the libFuzzer targets through CMake (the library with its real per-file
# ISA flags, so the SIMD kernels are fuzzed too; ASan + UBSan) and run one:
#   tests/fuzz/run.sh TARGET [SECONDS]
#   TARGET: fuzz_gguf (seeded with tests/fuzz/make_gguf_seed.py), fuzz_model (seeded
#   with the tiny model of tests/unit/tiny_model.h), fuzz_tokenizer (see
#   run_fuzz.sh for its inputs), fuzz_json, fuzz_jinja (seeded with the shared chat templates),
#   fuzz_http (seeded with a few requests)
# Needs clang with libFuzzer (Debian: clang, libclang-rt-dev).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${1:?usage: run.sh TARGET [SECONDS]}
secs=${2:-300}
out=${FUZZ_DIR:-$root/build-fuzz}
cmake -S "$root" -B "$out" -DCMAKE_C_COMPILER=clang -DMOE_FUZZ=ON -DMOE_DEFAULT_MODEL=OFF >/dev/null
cmake --build "$out" --target "$target" -j2
corpus="$out/corpus-$target"
mkdir -p "$corpus"
seeds=()
case "$target" in
  fuzz_gguf)
    python3 "$root/tests/fuzz/make_gguf_seed.py" "$out/seeds-$target"
    seeds+=("$out/seeds-$target") ;;
  fuzz_model)
    if [ -z "$(ls -A "$corpus")" ]; then
      clang -I"$root/include" -I"$root/src" -I"$root/tests/unit" "$root/tests/fuzz/seed_tiny_model.c" -o "$out/seed"
      "$out/seed" "$corpus/tiny.moe"
    fi ;;
  fuzz_jinja)
    [ -d "$root/../shared/chat-templates" ] && seeds+=("$root/../shared/chat-templates") ;;
  fuzz_http)
    mkdir -p "$out/seeds-$target"
    printf 'GET /health HTTP/1.1\r\nHost: a\r\n\r\n' > "$out/seeds-$target/get"
    printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}' \
      > "$out/seeds-$target/post"
    seeds+=("$out/seeds-$target") ;;
esac
"$out/$target" -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 "$corpus" "${seeds[@]}"
