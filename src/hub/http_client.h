// A small libcurl wrapper for the two requests the resolve protocol needs: HEAD for metadata and a
// streaming GET. Redirects are never followed here: the callers decide, because the token must not
// travel to another host and metadata must come from the first non-relative redirect.
#pragma once

#include <chrono>
#include <cstddef>
#include <exception>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace ckptio::hub {

struct HttpResponse {
  long status = 0;
  std::map<std::string, std::string> headers;  // names in lower case; the final response's only
  std::string redirect_url;                    // absolute target of a 3xx Location, else ""
  std::string body;                            // of non-2xx responses, first 64 KiB
  // The header's value, or "" when absent. `name` must be lower case.
  std::string header(std::string_view name) const;
};

enum class Transport : uint8_t {
  Ok,       // a response was received in full
  Timeout,  // connected, then the total timeout or the stall timeout ran out
  Dropped,  // the connection broke (reset, closed mid-body, nothing received)
  Failed,   // cannot connect (refused or connect timeout) or resolve, TLS failure, other errors
  Aborted,  // the sink refused the body
};

struct HttpOutcome {
  Transport transport = Transport::Ok;
  std::string error;  // libcurl's message when transport != Ok
  HttpResponse response;
};

// Receives a 2xx body. begin() is called once, before the first byte (or at the end for an empty
// body); returning false aborts the transfer. write() returning false aborts too. Exceptions
// thrown by the sink are rethrown from get().
class BodySink {
 public:
  virtual ~BodySink() = default;
  virtual bool begin(const HttpResponse& response) = 0;
  virtual bool write(std::span<const std::byte> data) = 0;
};

struct HttpTimeouts {
  std::chrono::milliseconds connect{10000};
  std::chrono::milliseconds total{0};  // 0: no limit on the whole request
  std::chrono::milliseconds stall{0};  // 0: no stall detection
};

class HttpClient {
 public:
  HttpClient();
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // `headers` are full "Name: value" lines.
  HttpOutcome head(const std::string& url, const std::vector<std::string>& headers,
                   const HttpTimeouts& timeouts);
  HttpOutcome get(const std::string& url, const std::vector<std::string>& headers,
                  const HttpTimeouts& timeouts, BodySink& sink);

 private:
  HttpOutcome perform(const std::string& url, const std::vector<std::string>& headers,
                      const HttpTimeouts& timeouts, bool head, BodySink* sink);
  void* curl_;  // CURL*, kept out of the header
};

// The User-Agent sent with every request.
std::string user_agent();

}  // namespace ckptio::hub
