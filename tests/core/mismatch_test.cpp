// MismatchReport: the one report of missing / unexpected / mismatched names.
#include <gtest/gtest.h>

#include "ckptio/mismatch.h"

namespace ckptio {
namespace {

TEST(MismatchReport, CountsAndDescribesEveryProblemByKind) {
  MismatchReport r;
  EXPECT_TRUE(r.ok());
  EXPECT_EQ(r.count(), 0u);
  EXPECT_EQ(r.describe(), "");
  r.missing = {"a", "b"};
  r.unexpected = {"c"};
  r.mismatched = {"d: source F16 [2], target F32 [3]"};
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.count(), 4u);
  EXPECT_EQ(r.describe(),
            "missing: a\nmissing: b\nunexpected: c\nmismatched: d: source F16 [2], target F32 [3]");
  MismatchReport only_unexpected;
  only_unexpected.unexpected = {"x"};
  EXPECT_FALSE(only_unexpected.ok());
}

}  // namespace
}  // namespace ckptio
