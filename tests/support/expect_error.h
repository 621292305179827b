// Runs `f`, which must throw a ckptio::Error of `code`; returns the error so the test can check
// its message (a test failure, and an Internal error, when nothing or something else is thrown).
#pragma once

#include <gtest/gtest.h>

#include "ckptio/error.h"

namespace ckptio::testing {

template <class F>
Error expect_error(F&& f, ErrorCode code) {
  try {
    f();
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), code) << e.what();
    return e;
  }
  ADD_FAILURE() << "no error";
  return Error(ErrorCode::Internal, "");
}

}  // namespace ckptio::testing
