# The libFuzzer targets (a MOE_FUZZ build: clang, every file with coverage
# instrumentation, ASan and UBSan, and its real per-file ISA flags, so the SIMD
# kernels are fuzzed too). One target per tests/fuzz/fuzz_*.c; ctest runs each
# for MOE_FUZZ_SECONDS on a corpus seeded by tests/fuzz/make_seeds.py (real
# requests, templates, tokenizers and models from ../shared, shrunk where the
# originals are too big to mutate quickly) plus the regression inputs in
# tests/fuzz/regress/TARGET (inputs that once failed). tests/fuzz/run.sh runs
# one target longer.
find_package(Python3 COMPONENTS Interpreter REQUIRED)
set(MOE_SHARED_DIR "${CMAKE_CURRENT_SOURCE_DIR}/../shared" CACHE PATH "The shared ground-truth folder")
get_filename_component(MOE_SHARED_DIR "${MOE_SHARED_DIR}" ABSOLUTE)
set(MOE_TEST_ENV "MOE_SHARED=${MOE_SHARED_DIR}" "MOE_ROOT=${CMAKE_CURRENT_SOURCE_DIR}"
    "MOE_WORK=${CMAKE_CURRENT_BINARY_DIR}/testwork" "PYTHONDONTWRITEBYTECODE=1" "OMP_WAIT_POLICY=PASSIVE")
set(MOE_FUZZ_SECONDS 40 CACHE STRING "Seconds each fuzz target runs under ctest")
set(MOE_FUZZ_DIR ${CMAKE_CURRENT_BINARY_DIR}/fuzz)
file(GLOB MOE_FUZZ_SOURCES CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/fuzz_*.c)

add_executable(seed_tiny_model ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/seed_tiny_model.c)
target_include_directories(seed_tiny_model PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit)
target_link_libraries(seed_tiny_model PRIVATE moelib)

add_test(NAME fuzz_seeds COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/make_seeds.py
         ${MOE_FUZZ_DIR}/seeds --tiny $<TARGET_FILE:seed_tiny_model> --moe $<TARGET_FILE:moe>)
set_tests_properties(fuzz_seeds PROPERTIES ENVIRONMENT "${MOE_TEST_ENV}" FIXTURES_SETUP fuzz_seeds TIMEOUT 600)

# test name, fuzz target, whose seeds, the environment it needs, its extra libFuzzer flags
function(moe_fuzz_test name target seeds env flags)
  set(corpus ${MOE_FUZZ_DIR}/corpus/${name})
  file(MAKE_DIRECTORY ${corpus})
  set(dirs ${corpus} ${MOE_FUZZ_DIR}/seeds/${seeds})
  if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/regress/${name})
    list(APPEND dirs ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/regress/${name})
  endif()
  # -timeout: one input taking this long is a hang; crashes land in the build folder
  add_test(NAME ${name} COMMAND ${target} -max_total_time=${MOE_FUZZ_SECONDS} -timeout=25 -rss_limit_mb=3072
           -print_final_stats=1 -artifact_prefix=${MOE_FUZZ_DIR}/${name}- ${flags} ${dirs})
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${MOE_TEST_ENV};${env}"
                       FIXTURES_REQUIRED fuzz_seeds TIMEOUT 900 LABELS fuzz)
endfunction()

foreach(src ${MOE_FUZZ_SOURCES})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit)
  target_compile_definitions(${name} PRIVATE MOE_LIBFUZZER)
  target_link_libraries(${name} PRIVATE moelib)
  target_link_options(${name} PRIVATE -fsanitize=fuzzer)
  if(name STREQUAL "fuzz_tokenizer")
    # text through the converted tokenizers, and tokenizer files through the loader
    moe_fuzz_test(fuzz_tokenizer ${name} fuzz_tokenizer "MOE_FUZZ_DIR=${MOE_FUZZ_DIR}/seeds/tok" "-max_len=4096")
    moe_fuzz_test(fuzz_tokenizer_load ${name} fuzz_tokenizer_load "MOE_FUZZ_MODE=load" "")
  else()
    moe_fuzz_test(${name} ${name} ${name} "" "")
  endif()
  if(name STREQUAL "fuzz_gguf" AND CMAKE_SYSTEM_PROCESSOR MATCHES "x86_64|AMD64|amd64")
    # the dispatcher picks one kernel set per process: the AVX2 one gets its own run
    # (on a CPU without AVX2 MOE_KERNELS names nothing and the best set runs)
    moe_fuzz_test(fuzz_gguf_avx2 ${name} fuzz_gguf "MOE_KERNELS=avx2" "")
  endif()
endforeach()
