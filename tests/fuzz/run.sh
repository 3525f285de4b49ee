#!/usr/bin/env bash
# Build and run a libFuzzer target: tests/fuzz/run.sh TARGET [SECONDS]
#   TARGET: fuzz_model (more with the tokenizer: fuzz_tokenizer)
# Needs clang with libFuzzer (Debian: clang, libclang-rt-14-dev).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
target=${1:?usage: run.sh TARGET [SECONDS]}
secs=${2:-300}
out=${FUZZ_DIR:-$root/build-fuzz}
mkdir -p "$out/corpus-$target"
srcs=$(ls "$root"/src/*.c)
clang -g -O1 -fsanitize=fuzzer,address,undefined -I"$root/include" -I"$root/src" -I"$root/tests/unit" \
  "$root/tests/fuzz/$target.c" $srcs -lm -o "$out/$target"
if [ "$target" = fuzz_model ] && [ -z "$(ls -A "$out/corpus-$target")" ]; then
  clang -I"$root/include" -I"$root/src" -I"$root/tests/unit" "$root/tests/fuzz/seed_tiny_model.c" -o "$out/seed"
  "$out/seed" "$out/corpus-$target/tiny.moe"
fi
"$out/$target" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 "$out/corpus-$target"
