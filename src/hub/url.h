// URL pieces the Hub protocol needs: percent-encoding as Python's urllib.parse.quote does it, and
// the origin (scheme://host:port) that decides whether a redirect may carry the token.
#pragma once

#include <string>
#include <string_view>

namespace ckptio::hub {

// Percent-encodes every byte except ASCII letters, digits and "_.-~" (and "/" when keep_slash).
// quote(revision, safe="") is percent_encode(revision, false); quote(filename) keeps slashes.
std::string percent_encode(std::string_view text, bool keep_slash);

// Decodes %XX escapes; a malformed escape is kept as written.
std::string percent_decode(std::string_view text);

// "scheme://host:port" in lower case with the default port filled in; "" for a URL without
// "://". Two URLs with different origins are different servers for the purpose of credentials.
std::string url_origin(std::string_view url);

// True for a Location header that names no host (a path, relative or absolute).
bool is_relative_location(std::string_view location);

}  // namespace ckptio::hub
