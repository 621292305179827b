// single_process_communicator() and agree(): the parts of communicator.h that need no engine.
#include "ckptio/communicator.h"

#include <cstdint>
#include <string>

#include "ckptio/error.h"

namespace ckptio::dist {

namespace {

class SingleProcess final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::vector<std::string> all_gather(std::string_view mine) override { return {std::string(mine)}; }
  std::vector<std::string> gather(std::string_view mine, int root) override {
    check_root(root);
    return {std::string(mine)};
  }
  std::string broadcast(std::string_view bytes, int root) override {
    check_root(root);
    return std::string(bytes);
  }
  void barrier() override {}
  std::chrono::milliseconds timeout() const override { return std::chrono::milliseconds::max(); }

 private:
  static void check_root(int root) {
    if (root != 0) {
      throw Error(ErrorCode::InvalidArgument,
                  "root rank " + std::to_string(root) + " is outside a group of 1");
    }
  }
};

// An outcome on the wire: empty for success, else one byte of ErrorCode then the message.
std::string encode_outcome(const std::exception_ptr& error) {
  if (!error) return {};
  try {
    std::rethrow_exception(error);
  } catch (const Error& e) {
    return std::string(1, static_cast<char>(e.code())) + e.message();
  } catch (const std::exception& e) {
    return std::string(1, static_cast<char>(ErrorCode::Internal)) + e.what();
  } catch (...) {
    return std::string(1, static_cast<char>(ErrorCode::Internal)) + "unknown exception";
  }
}

}  // namespace

std::unique_ptr<Communicator> single_process_communicator() {
  return std::make_unique<SingleProcess>();
}

void agree(Communicator& comm, std::string_view what, const std::exception_ptr& local_error) {
  const std::vector<std::string> outcomes = comm.all_gather(encode_outcome(local_error));
  int first = -1;
  int failed = 0;
  for (size_t r = 0; r < outcomes.size(); ++r) {
    if (outcomes[r].empty()) continue;
    ++failed;
    if (first < 0) first = static_cast<int>(r);
  }
  if (first < 0) return;
  const std::string& o = outcomes[static_cast<size_t>(first)];
  auto code = static_cast<ErrorCode>(static_cast<uint8_t>(o[0]));
  if (static_cast<uint8_t>(o[0]) > static_cast<uint8_t>(ErrorCode::Timeout)) code = ErrorCode::Internal;
  std::string msg = std::string(what) + ": rank " + std::to_string(first) + " of " +
                    std::to_string(outcomes.size()) + " failed: " + o.substr(1);
  if (failed > 1) {
    msg += " (" + std::to_string(failed - 1) + " other rank" + (failed > 2 ? "s" : "") +
           " failed too)";
  }
  throw Error(code, std::move(msg));
}

}  // namespace ckptio::dist
