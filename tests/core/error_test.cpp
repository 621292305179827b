// ckptio::Error: codes, names, messages and annotation.
#include "ckptio/error.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <set>
#include <string>

namespace ckptio {
namespace {

TEST(Error, CodeNamesAreStableAndDistinct) {
  EXPECT_EQ(error_code_name(ErrorCode::InvalidArgument), "invalid_argument");
  EXPECT_EQ(error_code_name(ErrorCode::NotFound), "not_found");
  EXPECT_EQ(error_code_name(ErrorCode::Corrupt), "corrupt");
  EXPECT_EQ(error_code_name(ErrorCode::Unsupported), "unsupported");
  EXPECT_EQ(error_code_name(ErrorCode::Unsafe), "unsafe");
  EXPECT_EQ(error_code_name(ErrorCode::IoError), "io_error");
  EXPECT_EQ(error_code_name(ErrorCode::NoSpace), "no_space");
  EXPECT_EQ(error_code_name(ErrorCode::Timeout), "timeout");
  std::set<std::string_view> names;
  for (int i = 0; i <= static_cast<int>(ErrorCode::Timeout); ++i) {
    names.insert(error_code_name(static_cast<ErrorCode>(i)));
  }
  EXPECT_EQ(names.size(), static_cast<size_t>(ErrorCode::Timeout) + 1);
}

TEST(Error, WhatIsCodeThenMessage) {
  const Error e(ErrorCode::Corrupt, "'a.safetensors': tensor 'w' at byte 17: bad");
  EXPECT_EQ(e.code(), ErrorCode::Corrupt);
  EXPECT_EQ(e.message(), "'a.safetensors': tensor 'w' at byte 17: bad");
  EXPECT_STREQ(e.what(), "corrupt: 'a.safetensors': tensor 'w' at byte 17: bad");
}

TEST(Error, AnnotatePrefixesContextAndKeepsTheCode) {
  const Error inner(ErrorCode::NoSpace, "write failed");
  const Error outer = inner.annotate("saving 'ckpt/step-10'").annotate("trainer");
  EXPECT_EQ(outer.code(), ErrorCode::NoSpace);
  EXPECT_EQ(outer.message(), "trainer: saving 'ckpt/step-10': write failed");
  EXPECT_STREQ(outer.what(), "no_space: trainer: saving 'ckpt/step-10': write failed");
  EXPECT_EQ(inner.message(), "write failed");  // the original is unchanged
}

TEST(Error, SystemErrorMapsErrno) {
  EXPECT_EQ(system_error(ENOSPC, "w").code(), ErrorCode::NoSpace);
  EXPECT_EQ(system_error(EDQUOT, "w").code(), ErrorCode::NoSpace);
  EXPECT_EQ(system_error(ENOENT, "open").code(), ErrorCode::NotFound);
  EXPECT_EQ(system_error(EEXIST, "open").code(), ErrorCode::AlreadyExists);
  EXPECT_EQ(system_error(EIO, "read").code(), ErrorCode::IoError);
  EXPECT_EQ(system_error(EACCES, "open").code(), ErrorCode::IoError);
  const Error e = system_error(ENOENT, "open '/x/y'");
  EXPECT_EQ(e.message().rfind("open '/x/y': ", 0), 0u) << e.message();
  EXPECT_GT(e.message().size(), std::string("open '/x/y': ").size());
}

}  // namespace
}  // namespace ckptio
