// Fuzz target: the trace reader (engine/trace) on arbitrary counts and router
// files.
//
// Input: one flags byte, then the counts file's bytes, then (when flag bit 0
// is set) a NUL and the router file's bytes.
//   bit 0: a router file follows the first NUL
//   bit 1: write the counts file gzip-compressed
//   bit 2: and cut the compressed bytes short (a truncated .gz)
// Every step the reader returns is checked against its layout.
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>

#include "engine/trace/trace_reader.h"
#include "fuzz/fuzz_util.h"
#include "zlib.h"

namespace {

using moecast::fuzz::ByteReader;
using moecast::fuzz::WriteTempFile;

std::string Gzip(const std::string& bytes) {
  z_stream z{};
  // 31 = 15 window bits + 16: a gzip header.
  if (deflateInit2(&z, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 31, 8,
                   Z_DEFAULT_STRATEGY) != Z_OK) {
    std::abort();
  }
  std::string out(deflateBound(&z, bytes.size()) + 32, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  z.avail_in = static_cast<uInt>(bytes.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = static_cast<uInt>(out.size());
  if (deflate(&z, Z_FINISH) != Z_STREAM_END) std::abort();
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  ByteReader in(data, size);
  const uint8_t flags = in.Byte();
  const bool with_router = (flags & 1) != 0;
  std::string counts = with_router ? in.Until('\0') : in.Rest();
  const std::string router = with_router ? in.Rest() : std::string();
  if ((flags & 2) != 0) {
    counts = Gzip(counts);
    if ((flags & 4) != 0) counts.resize(counts.size() / 2);
  }
  const std::string counts_path = WriteTempFile("t.counts.csv", counts);
  const std::string router_path =
      with_router ? WriteTempFile("t.router.csv", router) : std::string();

  auto reader = moecast::TraceReader::Open(counts_path, router_path);
  if (!reader.ok()) return 0;
  const moecast::TraceLayout& layout = (*reader)->layout();
  MOECAST_FUZZ_CHECK(layout.num_experts >= 1);
  MOECAST_FUZZ_CHECK(layout.num_layers() >= 1);
  for (size_t i = 1; i < layout.layer_ids.size(); ++i) {
    MOECAST_FUZZ_CHECK(layout.layer_ids[i - 1] < layout.layer_ids[i]);
  }
  const size_t lm = static_cast<size_t>(layout.num_layers()) *
                    static_cast<size_t>(layout.num_experts);
  moecast::TraceStep step;
  int64_t last_step = -1;
  for (int i = 0; i < 100000; ++i) {
    auto more = (*reader)->Next(&step);
    if (!more.ok() || !*more) break;
    MOECAST_FUZZ_CHECK(step.step > last_step);
    last_step = step.step;
    MOECAST_FUZZ_CHECK(step.counts.size() == lm);
    for (double c : step.counts) MOECAST_FUZZ_CHECK(c >= 0 && std::isfinite(c));
    MOECAST_FUZZ_CHECK(step.tokens.has_value() == layout.has_tokens);
    MOECAST_FUZZ_CHECK(step.router_z.size() == (layout.has_router ? lm : 0));
    MOECAST_FUZZ_CHECK(step.router_p.size() == (layout.has_router_probs ? lm : 0));
    MOECAST_FUZZ_CHECK(step.router_s.size() == (layout.has_router_std ? lm : 0));
    for (double z : step.router_z) MOECAST_FUZZ_CHECK(std::isfinite(z));
    const double p = (*reader)->progress();
    MOECAST_FUZZ_CHECK(p >= 0 && p <= 1);
  }
  return 0;
}
