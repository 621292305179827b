// save_safetensors through the async writer under the power-cut model, at every operation
// boundary: the path holds nothing, the old file or the new file, and the new one once the save
// returned. The io_uring + O_DIRECT configuration is run too: the model offers no descriptor and
// no O_DIRECT, so the writer takes its blocking path through the Env and stays inside the model.
#include <gtest/gtest.h>

#include "ckptio/async_writer.h"
#include "ckptio/error.h"
#include "ckptio/power_cut_env.h"
#include "ckptio/safetensors.h"
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
    Tensor t = Tensor::zeros(DType::F32, {static_cast<int64_t>(64 * (i + 1))});
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

void cut_at_every_boundary(const AsyncWriterOptions& writer, const PowerCutOptions& cut) {
  const std::vector<Version> versions = {make_version(1), make_version(2)};
  uint64_t total = 0;
  {
    testing::PowerCutRoot root;
    PowerCutEnv env(root.path());
    ASSERT_EQ(run_script(env, root / "m.safetensors", versions, writer), versions.size());
    total = env.ops();
  }
  ASSERT_GT(total, 8u);
  size_t failures = 0;
  for (uint64_t n = 0; n <= total; ++n) {
    testing::PowerCutRoot root;
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

AsyncWriterOptions writer_with(WriteBackend backend, bool direct) {
  AsyncWriterOptions w;
  w.backend = backend;
  w.direct_io = direct;
  w.threads = 1;         // one op order from run to run
  w.chunk_bytes = 4096;  // several writes per file
  return w;
}

TEST(SafetensorsPowerCut, PwriteEveryBoundary) {
  for (const auto names : {Names::Rollback, Names::Keep}) {
    cut_at_every_boundary(writer_with(WriteBackend::Pwrite, false), {names, Data::Drop});
  }
  cut_at_every_boundary(writer_with(WriteBackend::Pwrite, false), {Names::Rollback, Data::TornPrefix, 9});
}

TEST(SafetensorsPowerCut, IoUringAndDirectStayInsideTheModel) {
  cut_at_every_boundary(writer_with(WriteBackend::IoUring, true), {Names::Rollback, Data::Drop});
  cut_at_every_boundary(writer_with(WriteBackend::IoUring, true), {Names::Keep, Data::Drop});
}

}  // namespace
}  // namespace ckptio::io
