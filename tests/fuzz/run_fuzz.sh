#!/bin/sh
# run_fuzz.sh - build the tokenizer fuzz target with clang + libFuzzer (ASan, UBSan)
# and run it.
#
#   tests/fuzz/run_fuzz.sh [seconds] [tokenizer.moe | load]
#
# Tokenizers come from build/testwork/tok_c (the unit test test_tokenizer writes
# them there: run ctest -R test_tokenizer first). With a .moe argument only that
# tokenizer is fuzzed; with "load" the input is a .moe file for tokenizer_load,
# seeded with the converted tokenizers. Needs clang and libclang-rt (Debian:
# apt-get install clang libclang-rt-14-dev or the version matching clang).
set -eu
cd "$(dirname "$0")/../.."
secs=${1:-60}
what=${2:-}
out=build/fuzz
mkdir -p "$out/corpus"
clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -DMOE_LIBFUZZER \
    -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -std=c11 -Iinclude -Isrc -Itests/unit \
    src/tokenizer.c src/unicode.c src/unicode_data.c src/file.c tests/fuzz/fuzz_tokenizer.c -lm \
    -o "$out/fuzz_tokenizer"
export MOE_WORK=${MOE_WORK:-build/testwork}
if [ "$what" = load ]; then
    export MOE_FUZZ_MODE=load
    corpus="$out/corpus-load"
    mkdir -p "$corpus"
    for f in "$MOE_WORK"/tok_c/golden-*.moe "$MOE_WORK"/tok_c/stories260k.moe; do
        [ -f "$f" ] && cp "$f" "$corpus/"
    done
    max=16384
else
    [ -n "$what" ] && export MOE_FUZZ_TOK="$what"
    corpus="$out/corpus"
    # seed with the case texts
    i=0
    python3 - "$corpus" <<'EOF'
import os, sys
shared = os.environ.get("MOE_SHARED", os.path.join(os.getcwd(), "..", "shared"))
text = open(os.path.join(shared, "tokenizer-cases", "ggml-vocab-gpt-2.gguf.inp"), "rb").read()
for i, case in enumerate(text.split(b"\n__ggml_vocab_test__\n")):
    with open(os.path.join(sys.argv[1], "case%02d" % i), "wb") as f:
        f.write(bytes([i * 7 % 256]) + case)
EOF
    max=4096
fi
"$out/fuzz_tokenizer" -max_total_time="$secs" -max_len="$max" -print_final_stats=1 "$corpus"
