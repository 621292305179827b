// The reference reading of a distributed checkpoint's index. parse_index reads the index with
// simdjson and hands anything it does not accept whole to this one, so the two must agree on
// every text: tests and the fuzz target compare them.
#pragma once

#include <string_view>

#include "ckptio/dist.h"

namespace ckptio::dist::detail {

// parse_index through nlohmann's SAX parser: the same checks, the same errors.
GlobalIndex parse_index_with_nlohmann(std::string_view text, std::string_view source);

}  // namespace ckptio::dist::detail
