// save_safetensors through the async writer under the power-cut model, at every operation
// boundary: the path holds nothing, the old file or the new file, and the new one once the save
// returned. Every backend runs (pwrite, io_uring, O_DIRECT with each) and really writes the way
// it was asked to: the model gates io_uring submissions on the file's descriptor and the O_DIRECT
// file's writes, so their unsynced bytes are lost at a cut like write_at's.
#include <gtest/gtest.h>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/power_cut_env.h"
#include "ckptio/safetensors.h"
#include "io/write_backends.h"
#include "support/power_cut_root.h"
#include "support/test_util.h"

namespace ckptio::io {
namespace {

namespace fs = std::filesystem;
using Names = PowerCutOptions::Names;
using Data = PowerCutOptions::Data;

struct Version {
  std::vector<Tensor> tensors;
  std::vector<NamedTensor> views;
  std::string bytes;  // the file save_safetensors must produce
};

Version make_version(unsigned seed) {
  Version v;
  for (unsigned i = 0; i < 3; ++i) {
    // Several blocks each, so that O_DIRECT writes the aligned middles.
    Tensor t = Tensor::zeros(DType::F32, {static_cast<int64_t>(1024 * (i + 1) + 3)});
    auto b = t.mutable_bytes();
    for (size_t k = 0; k < b.size(); ++k) b[k] = static_cast<std::byte>((k * 31 + seed * 7 + i) & 0xff);
    v.tensors.push_back(std::move(t));
  }
  for (unsigned i = 0; i < 3; ++i) v.views.push_back({"t" + std::to_string(i), v.tensors[i].view()});
  v.bytes = serialize_safetensors(v.views);
  return v;
}

size_t run_script(Env& env, const fs::path& path, const std::vector<Version>& versions,
                  const AsyncWriterOptions& writer) {
  size_t returned = 0;
  try {
    for (const Version& v : versions) {
      SafetensorsWriteOptions o;
      o.env = &env;
      o.writer = &writer;
      save_safetensors(path, v.views, o);
      ++returned;
    }
  } catch (const Error&) {
  }
  return returned;
}

// O_DIRECT needs a folder on a real disk; the others run on tmpfs, which is faster.
std::unique_ptr<testing::PowerCutRoot> make_root(const AsyncWriterOptions& writer) {
  if (!writer.direct_io) return std::make_unique<testing::PowerCutRoot>();
  static const testing::DiskDir disk;
  return std::make_unique<testing::PowerCutRoot>(disk.path());
}

void cut_at_every_boundary(const AsyncWriterOptions& writer, const PowerCutOptions& cut) {
  const std::vector<Version> versions = {make_version(1), make_version(2)};
  uint64_t total = 0;
  {
    const auto root = make_root(writer);
    PowerCutEnv env(root->path());
    // The backend asked for is the one whose writes the model saw.
    testing::ObservingEnv observed(env);
    ASSERT_EQ(run_script(observed, *root / "m.safetensors", versions, writer), versions.size());
    testing::expect_backend_ran(observed, {writer.backend, writer.direct_io});
    total = env.ops();
  }
  ASSERT_GT(total, 8u);
  size_t failures = 0;
  for (uint64_t n = 0; n <= total; ++n) {
    const auto root_holder = make_root(writer);
    const testing::PowerCutRoot& root = *root_holder;
    PowerCutEnv env(root.path());
    env.cut_after(n);
    const size_t returned = run_script(env, root / "m.safetensors", versions, writer);
    env.power_cut(cut);
    std::string got;
    const bool exists = fs::exists(root / "m.safetensors");
    if (exists) got = testing::read_file(root / "m.safetensors");
    bool ok;
    if (returned == 0) {
      ok = !exists || got == versions[0].bytes;
    } else if (returned == 1) {
      ok = exists && (got == versions[0].bytes || got == versions[1].bytes);
    } else {
      ok = exists && got == versions[1].bytes;
    }
    for (const auto& e : fs::directory_iterator(root.path())) {
      const std::string name = e.path().filename().string();
      if (name != "m.safetensors" && !is_temp_name(name)) ok = false;
    }
    if (!ok && ++failures <= 5) {
      ADD_FAILURE() << "power cut after op " << n << " of " << total << " (" << returned
                    << " saves returned): " << (exists ? std::to_string(got.size()) + " bytes" : "no file");
    }
  }
  EXPECT_EQ(failures, 0u) << "of " << total + 1 << " boundaries";
}

AsyncWriterOptions writer_with(const testing::WriteBackendCase& c) {
  AsyncWriterOptions w;
  w.backend = c.backend;
  w.direct_io = c.direct;
  w.threads = 1;         // one op order from run to run
  w.chunk_bytes = 4096;  // several writes per file (and whole blocks for O_DIRECT)
  return w;
}

class SafetensorsPowerCut : public ::testing::TestWithParam<testing::WriteBackendCase> {};

TEST_P(SafetensorsPowerCut, EveryBoundary) {
  const testing::WriteBackendCase c = GetParam();
  {
    const auto root = make_root(writer_with(c));
    CKPTIO_SKIP_UNLESS_BACKEND(c, root->path());
  }
  for (const auto names : {Names::Rollback, Names::Keep}) {
    cut_at_every_boundary(writer_with(c), {names, Data::Drop});
  }
  cut_at_every_boundary(writer_with(c), {Names::Rollback, Data::TornPrefix, 9});
}

INSTANTIATE_TEST_SUITE_P(Backends, SafetensorsPowerCut, testing::all_write_backends(),
                         [](const ::testing::TestParamInfo<testing::WriteBackendCase>& info) {
                           return testing::write_backend_case_name(info.param);
                         });

}  // namespace
}  // namespace ckptio::io
