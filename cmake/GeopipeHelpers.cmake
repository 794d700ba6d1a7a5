# Small helpers so every part declares its library and tests the same way.

# geopipe_warnings(target): the warning set every target of ours compiles with.
function(geopipe_warnings target)
  target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>)
endfunction()

# geopipe_add_test(NAME name SOURCES ... LIBS ... [LABELS ...] [TIMEOUT s])
# One GoogleTest executable run by ctest as one test.
function(geopipe_add_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SOURCES;LIBS;LABELS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} GTest::gtest GTest::gtest_main)
  target_compile_definitions(${T_NAME} PRIVATE GEOPIPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                               GEOPIPE_BINARY_DIR="${PROJECT_BINARY_DIR}")
  set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
  geopipe_warnings(${T_NAME})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "unit;${T_LABELS}")
endfunction()

# geopipe_add_mpi_test(NAME name NP k SOURCES ... LIBS ... [ARGS ...] [TIMEOUT s])
# A GoogleTest executable started by ctest through `mpiexec -n k --oversubscribe`.
function(geopipe_add_mpi_test)
  cmake_parse_arguments(T "" "NAME;NP;TIMEOUT" "SOURCES;LIBS;ARGS;LABELS" ${ARGN})
  if(NOT TARGET ${T_NAME})
    add_executable(${T_NAME} ${T_SOURCES})
    # MPI tests bring their own main (MPI_Init_thread before GoogleTest, output from rank 0 only).
    target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} geopipe_mpi_test_main GTest::gtest MPI::MPI_CXX)
    target_compile_definitions(${T_NAME} PRIVATE GEOPIPE_SOURCE_DIR="${PROJECT_SOURCE_DIR}"
                                                 GEOPIPE_BINARY_DIR="${PROJECT_BINARY_DIR}")
    set_target_properties(${T_NAME} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${PROJECT_BINARY_DIR}/tests)
    geopipe_warnings(${T_NAME})
  endif()
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  set(test_name ${T_NAME}_np${T_NP})
  add_test(NAME ${test_name}
           COMMAND ${MPIEXEC_EXECUTABLE} ${MPIEXEC_NUMPROC_FLAG} ${T_NP} --oversubscribe
                   ${MPIEXEC_PREFLAGS} $<TARGET_FILE:${T_NAME}> ${MPIEXEC_POSTFLAGS} ${T_ARGS})
  set_tests_properties(${test_name} PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "mpi;${T_LABELS}"
    ENVIRONMENT "OMPI_ALLOW_RUN_AS_ROOT=1;OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1;OMPI_MCA_rmaps_base_oversubscribe=1")
endfunction()
