// libcurl plumbing: one easy handle per client, headers collected per response, bodies streamed
// to a sink, transport failures classified for the retry logic.
#include "hub/http_client.h"

#include <curl/curl.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <string>
#include <mutex>

#include "ckptio/error.h"

namespace ckptio::hub {
namespace {

constexpr size_t kMaxErrorBody = 64 * 1024;

void global_init_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

struct TransferState {
  HttpResponse response;
  BodySink* sink = nullptr;
  CURL* curl = nullptr;
  bool begun = false;
  bool sink_refused = false;
  // Stall detection: the time the last body byte arrived (or the request began).
  std::chrono::milliseconds stall{0};
  curl_off_t received = 0;
  std::chrono::steady_clock::time_point last_progress;
  bool stalled = false;
  std::exception_ptr sink_error;

  bool is_success() const { return response.status >= 200 && response.status < 300; }
};

size_t on_header(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t n = size * count;
  std::string_view line(data, n);
  while (!line.empty() && (line.back() == '\r' || line.back() == '\n')) line.remove_suffix(1);
  if (line.starts_with("HTTP/")) {
    // A new response (after a 100 Continue, say): forget the previous one's headers.
    state->response.headers.clear();
    const size_t sp = line.find(' ');
    if (sp != std::string_view::npos) state->response.status = std::atol(std::string(line.substr(sp + 1, 3)).c_str());
    return n;
  }
  const size_t colon = line.find(':');
  if (colon == std::string_view::npos) return n;
  std::string name(line.substr(0, colon));
  for (char& c : name) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  std::string_view value = line.substr(colon + 1);
  while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
  while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
  state->response.headers[name] = std::string(value);
  return n;
}

bool begin_sink(TransferState& state) {
  state.begun = true;
  try {
    if (!state.sink->begin(state.response)) {
      state.sink_refused = true;
      return false;
    }
  } catch (...) {
    state.sink_error = std::current_exception();
    return false;
  }
  return true;
}

size_t on_body(char* data, size_t size, size_t count, void* user) {
  auto* state = static_cast<TransferState*>(user);
  const size_t n = size * count;
  long code = 0;
  curl_easy_getinfo(state->curl, CURLINFO_RESPONSE_CODE, &code);
  state->response.status = code;
  if (state->sink == nullptr || !state->is_success()) {
    const size_t keep = std::min(n, kMaxErrorBody - std::min(kMaxErrorBody, state->response.body.size()));
    state->response.body.append(data, keep);
    return n;
  }
  if (!state->begun && !begin_sink(*state)) return 0;
  try {
    if (!state->sink->write(std::as_bytes(std::span(data, n)))) {
      state->sink_refused = true;
      return 0;
    }
  } catch (...) {
    state->sink_error = std::current_exception();
    return 0;
  }
  return n;
}

// libcurl's own LOW_SPEED check averages the speed over the last few seconds, so after a burst
// it notices a dead connection only about five seconds late; this measures the silence itself.
int on_progress(void* user, curl_off_t, curl_off_t dlnow, curl_off_t, curl_off_t) {
  auto* state = static_cast<TransferState*>(user);
  const auto now = std::chrono::steady_clock::now();
  if (dlnow != state->received) {
    state->received = dlnow;
    state->last_progress = now;
    return 0;
  }
  if (now - state->last_progress >= state->stall) {
    state->stalled = true;
    return 1;
  }
  return 0;
}

Transport classify(CURLcode code) {
  switch (code) {
    case CURLE_OK: return Transport::Ok;
    case CURLE_OPERATION_TIMEDOUT: return Transport::Timeout;
    case CURLE_PARTIAL_FILE:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM: return Transport::Dropped;
    case CURLE_WRITE_ERROR:
    case CURLE_ABORTED_BY_CALLBACK: return Transport::Aborted;
    default: return Transport::Failed;
  }
}

}  // namespace

std::string HttpResponse::header(std::string_view name) const {
  const auto it = headers.find(std::string(name));
  return it == headers.end() ? std::string() : it->second;
}

std::string user_agent() {
  return std::string("ckptio/0.1; hf_hub/compatible; ") + curl_version();
}

HttpClient::HttpClient() {
  global_init_once();
  curl_ = curl_easy_init();
  if (curl_ == nullptr) throw Error(ErrorCode::Internal, "curl_easy_init failed");
}

HttpClient::~HttpClient() { curl_easy_cleanup(static_cast<CURL*>(curl_)); }

HttpOutcome HttpClient::head(const std::string& url, const std::vector<std::string>& headers,
                             const HttpTimeouts& timeouts) {
  return perform(url, headers, timeouts, /*head=*/true, nullptr);
}

HttpOutcome HttpClient::get(const std::string& url, const std::vector<std::string>& headers,
                            const HttpTimeouts& timeouts, BodySink& sink) {
  return perform(url, headers, timeouts, /*head=*/false, &sink);
}

HttpOutcome HttpClient::perform(const std::string& url, const std::vector<std::string>& headers,
                                const HttpTimeouts& timeouts, bool head, BodySink* sink) {
  CURL* curl = static_cast<CURL*>(curl_);
  curl_easy_reset(curl);
  TransferState state;
  state.sink = sink;
  state.curl = curl;
  char error_buffer[CURL_ERROR_SIZE] = {0};

  curl_slist* list = nullptr;
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  const std::string agent = user_agent();

  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https");
  curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L);
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_USERAGENT, agent.c_str());
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, list);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error_buffer);
  curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header);
  curl_easy_setopt(curl, CURLOPT_HEADERDATA, &state);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &state);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, static_cast<long>(timeouts.connect.count()));
  if (timeouts.total.count() > 0) {
    curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, static_cast<long>(timeouts.total.count()));
  }
  if (timeouts.stall.count() > 0) {
    // Called at least about once a second, so a stall is noticed within a second of its limit.
    state.stall = timeouts.stall;
    state.last_progress = std::chrono::steady_clock::now();
    curl_easy_setopt(curl, CURLOPT_XFERINFOFUNCTION, on_progress);
    curl_easy_setopt(curl, CURLOPT_XFERINFODATA, &state);
    curl_easy_setopt(curl, CURLOPT_NOPROGRESS, 0L);
  }
  if (head) curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);

  const CURLcode code = curl_easy_perform(curl);
  curl_slist_free_all(list);

  HttpOutcome out;
  long status = 0;
  curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
  if (status != 0) state.response.status = status;
  char* redirect = nullptr;
  if (curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &redirect) == CURLE_OK && redirect != nullptr) {
    state.response.redirect_url = redirect;
  }
  if (state.sink_error) std::rethrow_exception(state.sink_error);
  out.transport = state.sink_refused ? Transport::Aborted
                  : state.stalled    ? Transport::Timeout
                                     : classify(code);
  if (out.transport == Transport::Timeout) {
    // A timeout before the connection was even made means the host is unreachable (offline
    // machine, firewall): that is a failure to connect, not a slow server worth retrying.
    curl_off_t connect_us = 0;
    if (curl_easy_getinfo(curl, CURLINFO_CONNECT_TIME_T, &connect_us) == CURLE_OK && connect_us == 0) {
      out.transport = Transport::Failed;
    }
  }
  if (state.stalled) {
    out.error = "no data received for " + std::to_string(timeouts.stall.count()) + " ms";
  } else if (code != CURLE_OK) {
    out.error = error_buffer[0] != '\0' ? std::string(error_buffer) : curl_easy_strerror(code);
  }
  // An empty 2xx body never reaches on_body; the sink still gets its begin().
  if (code == CURLE_OK && sink != nullptr && state.is_success() && !state.begun) {
    if (!begin_sink(state)) {
      if (state.sink_error) std::rethrow_exception(state.sink_error);
      out.transport = Transport::Aborted;
    }
  }
  out.response = std::move(state.response);
  return out;
}

}  // namespace ckptio::hub
