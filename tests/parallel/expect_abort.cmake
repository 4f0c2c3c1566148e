# tests/parallel/expect_abort.cmake — runs `MPIEXEC -np 2 PROGRAM` and asserts the job ends
# non-zero within 60 s with a stderr that names rank 1 and the cause.
# cmake -DMPIEXEC=... -DPROGRAM=... -P expect_abort.cmake
string(TIMESTAMP t0 "%s")
execute_process(
  COMMAND ${MPIEXEC} --oversubscribe --bind-to none -np 2 ${PROGRAM}
  RESULT_VARIABLE rc OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
string(TIMESTAMP t1 "%s")
math(EXPR seconds "${t1} - ${t0}")
message(STATUS "exit: ${rc} after ${seconds} s\n--- stdout\n${out}--- stderr\n${err}---")
if(rc STREQUAL "0")
  message(FATAL_ERROR "the job exited 0: a rank's failure did not bring it down")
endif()
if(NOT rc MATCHES "^[0-9]+$")
  message(FATAL_ERROR "the job did not end by itself within 60 s (${rc}): a rank hangs")
endif()
if(NOT err MATCHES "\\[rank 1/2\\] [^\n]*simulated failure in rank 1's forward")
  message(FATAL_ERROR "stderr does not name rank 1 and the cause")
endif()
message(STATUS "ok: the job aborted (exit ${rc}) in ${seconds} s and named rank 1")
