# Compiles SRC twice: without TOLLGATE_MISUSE it must compile (so the file is
# sound), with it it must fail with the diagnostic named on the file's
# "// expect:" line (so it fails for the right reason).
file(STRINGS "${SRC}" _expect REGEX "^// expect: ")
string(REGEX REPLACE "^// expect: " "" _expect "${_expect}")
execute_process(COMMAND "${CXX}" -std=c++17 -fsyntax-only "-I${INC}" -x c++ "${SRC}"
                RESULT_VARIABLE _ok_rc ERROR_VARIABLE _ok_err)
if(NOT _ok_rc EQUAL 0)
  message(FATAL_ERROR "the sound variant of ${SRC} does not compile:\n${_ok_err}")
endif()
execute_process(COMMAND "${CXX}" -std=c++17 -fsyntax-only -DTOLLGATE_MISUSE "-I${INC}" -x c++ "${SRC}"
                RESULT_VARIABLE _bad_rc ERROR_VARIABLE _bad_err)
if(_bad_rc EQUAL 0)
  message(FATAL_ERROR "misuse in ${SRC} compiled but must not")
endif()
if(NOT _bad_err MATCHES "${_expect}")
  message(FATAL_ERROR "misuse in ${SRC} failed for another reason (expected '${_expect}'):\n${_bad_err}")
endif()
message(STATUS "refused as expected: ${SRC}")
