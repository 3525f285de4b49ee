# Test registration. Adding a test = adding a file:
#   tests/unit/test_*.c   a C program linked against the library; exit 0 = pass
#   tests/py/test_*.py    a Python unittest module (standard library only)
# Tests find the shared ground truth in MOE_SHARED (../shared next to the repo)
# and the CLI in MOE_BIN.
find_package(Python3 COMPONENTS Interpreter REQUIRED)

set(MOE_SHARED_DIR "${CMAKE_CURRENT_SOURCE_DIR}/../shared" CACHE PATH "The shared ground-truth folder")
get_filename_component(MOE_SHARED_DIR "${MOE_SHARED_DIR}" ABSOLUTE)
set(MOE_TEST_ENV
    "MOE_BIN=$<TARGET_FILE:moe>"
    "MOE_EXAMPLE=$<TARGET_FILE:moe_example>"
    "MOE_SHARED=${MOE_SHARED_DIR}"
    "MOE_ROOT=${CMAKE_CURRENT_SOURCE_DIR}"
    "MOE_WORK=${CMAKE_CURRENT_BINARY_DIR}/testwork"
    "PYTHONDONTWRITEBYTECODE=1"
    # OpenMP threads that wait by spinning starve each other when the machine runs more threads
    # than it has cores (several suites at once on 2 cores: a 255-token `moe run` of the default
    # model took 16-44 s instead of 0.2 s); waiting passively changes no result
    "OMP_WAIT_POLICY=PASSIVE")

find_package(Threads REQUIRED) # test_threads runs contexts on two threads
file(GLOB MOE_C_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit/test_*.c)
foreach(src ${MOE_C_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_executable(${name} ${src})
  target_include_directories(${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit)
  target_link_libraries(${name} PRIVATE moelib Threads::Threads)
  add_test(NAME ${name} COMMAND ${name})
  # exit 77: skipped (../shared absent), reported as such, never as a pass
  set_tests_properties(${name} PROPERTIES ENVIRONMENT "${MOE_TEST_ENV}" TIMEOUT 600 SKIP_RETURN_CODE 77)
endforeach()

file(GLOB MOE_PY_TESTS CONFIGURE_DEPENDS ${CMAKE_CURRENT_SOURCE_DIR}/tests/py/test_*.py)
foreach(src ${MOE_PY_TESTS})
  get_filename_component(name ${src} NAME_WE)
  add_test(NAME py_${name} COMMAND ${Python3_EXECUTABLE} -m unittest -v ${name}
           WORKING_DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/tests/py)
  set_tests_properties(py_${name} PROPERTIES ENVIRONMENT "${MOE_TEST_ENV}" TIMEOUT 1800 SKIP_RETURN_CODE 77)
endforeach()

# moe serve through the official openai npm package (tests/node; .ci/run installs it with npm).
# Exit code 77 = skipped (node or the package missing), reported as such, never as a pass.
add_test(NAME node_openai COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/node/run_openai_test.py)
set_tests_properties(node_openai PROPERTIES ENVIRONMENT "${MOE_TEST_ENV}" TIMEOUT 600 SKIP_RETURN_CODE 77)
# The built-in chat page in headless Chromium (Debian's, installed by .ci/run) driven by playwright-core
# (tests/node); skipped (77) without chromium, node or the package. The screenshot: testwork/serve_page.
add_test(NAME node_page COMMAND ${Python3_EXECUTABLE} ${CMAKE_CURRENT_SOURCE_DIR}/tests/node/run_page_test.py)
set_tests_properties(node_page PROPERTIES ENVIRONMENT "${MOE_TEST_ENV}" TIMEOUT 600 SKIP_RETURN_CODE 77)

# Inputs that once broke a fuzz target (tests/fuzz/regress/TARGET/), replayed through the target's
# entry point without libFuzzer (tests/fuzz/replay.c), so every build, the sanitized one
# included, keeps them fixed. TARGET fuzz_tokenizer_load is fuzz_tokenizer in its load mode.
file(GLOB MOE_FUZZ_REGRESS LIST_DIRECTORIES true ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/regress/fuzz_*)
foreach(dir ${MOE_FUZZ_REGRESS})
  get_filename_component(name ${dir} NAME)
  set(src ${name})
  set(env "")
  if(name STREQUAL "fuzz_tokenizer_load")
    set(src fuzz_tokenizer)
    set(env "MOE_FUZZ_MODE=load")
  endif()
  add_executable(replay_${name} ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/${src}.c ${CMAKE_CURRENT_SOURCE_DIR}/tests/fuzz/replay.c)
  target_include_directories(replay_${name} PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src ${CMAKE_CURRENT_SOURCE_DIR}/tests/unit)
  target_compile_definitions(replay_${name} PRIVATE MOE_LIBFUZZER)
  target_link_libraries(replay_${name} PRIVATE moelib)
  add_test(NAME regress_${name} COMMAND replay_${name} ${dir})
  set_tests_properties(regress_${name} PROPERTIES ENVIRONMENT "${MOE_TEST_ENV};${env}" TIMEOUT 600)
endforeach()
