// tests/unit/test_io.cpp — runtime/io: safetensors round trips and slices, GGUF parsing and
// dequantisation on crafted bytes (and on SmolLM2 when SECATEUR_GGUF names it), rejection of
// damaged files with a message that says what is wrong, and atomic writes.
#include <gtest/gtest.h>

#include <ATen/core/Tensor.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/randint.h>
#include <ATen/ops/randn.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <map>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <unistd.h>

#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"
#include "runtime/io/dequant.h"
#include "runtime/io/gguf.h"
#include "runtime/io/mapped_file.h"
#include "runtime/io/safetensors.h"

namespace fs = std::filesystem;
using namespace secateur::io;

namespace {

// ---------------------------------------------------------------------------------------------
// Helpers

class TempDir {
 public:
  TempDir() {
    const char* base = std::getenv("TMPDIR");
    std::string tmpl = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/secateur_io_test.XXXXXX";
    char* p = ::mkdtemp(tmpl.data());
    if (p == nullptr) throw std::runtime_error("mkdtemp failed for " + tmpl);
    path_ = p;
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  if (!f) throw std::runtime_error("cannot write " + path);
}

std::string read_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// The message of the secateur::Error that fn throws, or a marker that none was thrown.
std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const secateur::Error& e) {
    return e.what();
  }
  return "<no secateur::Error thrown>";
}

::testing::AssertionResult has_all(const std::string& msg, std::initializer_list<const char*> words) {
  for (const char* w : words)
    if (msg.find(w) == std::string::npos) return ::testing::AssertionFailure() << "'" << w << "' not in: " << msg;
  return ::testing::AssertionSuccess();
}

std::vector<std::string> files_in(const fs::path& dir) {
  std::vector<std::string> out;
  for (const auto& e : fs::directory_iterator(dir)) out.push_back(e.path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

bool any_temp_file(const fs::path& dir) {
  for (const auto& name : files_in(dir))
    if (name.find(".tmp.") != std::string::npos) return true;
  return false;
}

bool same_bits(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  at::Tensor ac = a.contiguous(), bc = b.contiguous();
  return ac.nbytes() == 0 || std::memcmp(ac.const_data_ptr(), bc.const_data_ptr(), ac.nbytes()) == 0;
}

// Little-endian byte builder for crafted files.
struct Bytes {
  std::string b;
  template <typename T>
  Bytes& put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof(T));
    return *this;
  }
  Bytes& u8(uint8_t v) { return put(v); }
  Bytes& i8(int8_t v) { return put(v); }
  Bytes& u16(uint16_t v) { return put(v); }
  Bytes& u32(uint32_t v) { return put(v); }
  Bytes& i32(int32_t v) { return put(v); }
  Bytes& u64(uint64_t v) { return put(v); }
  Bytes& f32(float v) { return put(v); }
  Bytes& raw(const std::string& s) {
    b += s;
    return *this;
  }
  Bytes& str(const std::string& s) { return u64(s.size()).raw(s); }
  Bytes& pad_to(size_t align) {
    while (b.size() % align != 0) b.push_back('\0');
    return *this;
  }
};

enum : uint32_t { kU8 = 0, kI8 = 1, kU32 = 4, kI32 = 5, kF32 = 6, kBool = 7, kStr = 8, kArr = 9, kU64 = 10 };

Bytes gguf_header(uint64_t n_tensors, uint64_t n_kv) {
  Bytes h;
  h.raw("GGUF").u32(3).u64(n_tensors).u64(n_kv);
  return h;
}

// A complete small GGUF v3: nine metadata values of assorted types (alignment 64) and four
// tensors — F32 [2, 3], Q8_0 [2, 32], Q4_0 [32], Q4_1 [32] — with known values. The file ends
// exactly where the last tensor's data ends, so every proper prefix of it is damaged.
std::string crafted_gguf() {
  Bytes h = gguf_header(4, 9);
  h.str("general.architecture").u32(kStr).str("llama");
  h.str("llama.block_count").u32(kU32).u32(30);
  h.str("general.alignment").u32(kU32).u32(64);
  h.str("test.i8").u32(kI8).i8(-5);
  h.str("test.f32").u32(kF32).f32(0.5f);
  h.str("test.flag").u32(kBool).u8(1);
  h.str("test.u64").u32(kU64).u64(uint64_t{1} << 40);
  h.str("tokenizer.tokens").u32(kArr).u32(kStr).u64(3).str("a").str("bc").str("");
  h.str("test.ints").u32(kArr).u32(kI32).u64(3).i32(1).i32(-2).i32(3);
  // name, n_dims, ne[] (row length first), ggml type, offset in the data area
  h.str("w.f32").u32(2).u64(3).u64(2).u32(0).u64(0);
  h.str("w.q8").u32(2).u64(32).u64(2).u32(8).u64(64);
  h.str("w.q4_0").u32(1).u64(32).u32(2).u64(192);
  h.str("w.q4_1").u32(1).u64(32).u32(3).u64(256);
  h.pad_to(64);
  const size_t data = h.b.size();
  for (int i = 0; i < 6; ++i) h.f32(1.5f * static_cast<float>(i));    // F32: 0, 1.5, ..., 7.5
  h.pad_to(64);
  h.u16(0x3800);                                                        // Q8_0 block 0: d = 0.5
  for (int j = 0; j < 32; ++j) h.i8(static_cast<int8_t>(j - 16));       //   q = -16 .. 15
  h.u16(0x4000);                                                        // block 1: d = 2
  for (int j = 0; j < 32; ++j) h.i8(static_cast<int8_t>(j % 5 - 2));
  while (h.b.size() < data + 192) h.u8(0);
  h.u16(0x3C00);                                                        // Q4_0: d = 1
  for (int j = 0; j < 16; ++j) h.u8(static_cast<uint8_t>(j | ((15 - j) << 4)));
  while (h.b.size() < data + 256) h.u8(0);
  h.u16(0x3400).u16(0xBC00);                                            // Q4_1: d = 0.25, m = -1
  for (int j = 0; j < 16; ++j) h.u8(static_cast<uint8_t>(j | ((15 - j) << 4)));
  return h.b;
}

std::vector<float> values(const at::Tensor& t) {
  at::Tensor c = t.contiguous();
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

// ---------------------------------------------------------------------------------------------
// GGUF

TEST(Gguf, CraftedFileParsesMetadataOfEveryKind) {
  TempDir tmp;
  write_bytes(tmp / "m.gguf", crafted_gguf());
  GgufFile g(tmp / "m.gguf");
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.alignment(), 64u);
  EXPECT_EQ(g.keys(), (std::vector<std::string>{"general.architecture", "llama.block_count", "general.alignment",
                                                "test.i8", "test.f32", "test.flag", "test.u64", "tokenizer.tokens",
                                                "test.ints"}));
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_int("llama.block_count"), 30);
  EXPECT_EQ(g.get_int("test.i8"), -5);
  EXPECT_EQ(g.get_int("test.u64"), int64_t{1} << 40);
  EXPECT_EQ(g.get_float("test.f32"), 0.5);
  EXPECT_EQ(g.get_float("llama.block_count"), 30.0);
  EXPECT_TRUE(g.get_bool("test.flag", false));
  EXPECT_EQ(g.get_string_array("tokenizer.tokens"), (std::vector<std::string>{"a", "bc", ""}));
  EXPECT_EQ(g.get_int_array("test.ints"), (std::vector<int64_t>{1, -2, 3}));
  EXPECT_EQ(g.array_size("tokenizer.tokens"), 3u);
  EXPECT_TRUE(g.has("test.flag"));
  EXPECT_FALSE(g.has("nope"));
  EXPECT_EQ(g.get_int("nope", 17), 17);
  EXPECT_EQ(g.get_float("nope", 2.5), 2.5);
  EXPECT_EQ(g.get_string("nope", "x"), "x");
  EXPECT_FALSE(g.get_bool("nope", false));
  EXPECT_TRUE(has_all(error_of([&] { g.get_int("nope"); }), {"m.gguf", "'nope'", "absent"}));
  EXPECT_TRUE(has_all(error_of([&] { g.get_int("test.f32"); }), {"'test.f32'", "float32", "not an integer"}));
  EXPECT_TRUE(has_all(error_of([&] { g.get_string("test.i8"); }), {"'test.i8'", "not string"}));
  EXPECT_TRUE(has_all(error_of([&] { g.get_string_array("test.ints"); }), {"'test.ints'", "int32"}));
  EXPECT_TRUE(has_all(error_of([&] { g.get_int("llama.block_count", 0); g.get_int("general.architecture", 0); }),
                      {"'general.architecture'", "not an integer"}));
}

TEST(Gguf, CraftedTensorsDequantiseToKnownValues) {
  TempDir tmp;
  write_bytes(tmp / "m.gguf", crafted_gguf());
  GgufFile g(tmp / "m.gguf");
  ASSERT_EQ(g.tensors().size(), 4u);
  EXPECT_EQ(g.tensors()[0].name, "w.f32");
  EXPECT_EQ(g.tensors()[1].name, "w.q8");
  EXPECT_EQ(g.find("nope"), nullptr);
  const GgufTensorInfo* f = g.find("w.f32");
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->shape, (std::vector<int64_t>{2, 3}));   // reversed ne
  EXPECT_EQ(f->type, static_cast<uint32_t>(GgmlType::F32));
  EXPECT_EQ(f->nbytes, 24u);
  EXPECT_EQ(f->offset % 64, 0u);
  EXPECT_EQ(g.find("w.q8")->nbytes, 68u);
  EXPECT_EQ(g.find("w.q8")->offset, f->offset + 64);

  at::Tensor t = g.dequantize("w.f32");
  EXPECT_EQ(t.scalar_type(), at::kFloat);
  EXPECT_EQ(t.sizes().vec(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(values(t), (std::vector<float>{0, 1.5f, 3, 4.5f, 6, 7.5f}));

  std::vector<float> q8_expected;
  for (int j = 0; j < 32; ++j) q8_expected.push_back(0.5f * static_cast<float>(j - 16));
  for (int j = 0; j < 32; ++j) q8_expected.push_back(2.0f * static_cast<float>(j % 5 - 2));
  at::Tensor q8 = g.dequantize("w.q8");
  EXPECT_EQ(q8.sizes().vec(), (std::vector<int64_t>{2, 32}));
  EXPECT_EQ(values(q8), q8_expected);

  std::vector<float> q40(32), q41(32);   // low nibbles are elements 0..15, high nibbles 16..31
  for (int j = 0; j < 16; ++j) {
    q40[j] = static_cast<float>(j - 8);
    q40[j + 16] = static_cast<float>(7 - j);
    q41[j] = 0.25f * static_cast<float>(j) - 1.0f;
    q41[j + 16] = 0.25f * static_cast<float>(15 - j) - 1.0f;
  }
  EXPECT_EQ(values(g.dequantize("w.q4_0")), q40);
  EXPECT_EQ(values(g.dequantize("w.q4_1")), q41);
  EXPECT_TRUE(has_all(error_of([&] { g.dequantize("nope"); }), {"'nope'", "absent"}));
}

TEST(Gguf, DequantizeRowDecodesHalfAndBf16Exactly) {
  EXPECT_EQ(half_to_float(0x3C00), 1.0f);
  EXPECT_EQ(half_to_float(0xC000), -2.0f);
  EXPECT_EQ(half_to_float(0x0001), std::ldexp(1.0f, -24));   // smallest subnormal
  EXPECT_EQ(half_to_float(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(half_to_float(0xFC00)) && half_to_float(0xFC00) < 0);
  EXPECT_TRUE(std::isnan(half_to_float(0x7E00)));
  EXPECT_TRUE(std::signbit(half_to_float(0x8000)));
  const uint16_t bf[2] = {0x3F80, 0xC2F7};   // 1.0, -123.5
  float out[2];
  dequantize_row(static_cast<uint32_t>(GgmlType::BF16), reinterpret_cast<const uint8_t*>(bf), out, 2);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -123.5f);
  EXPECT_TRUE(has_all(error_of([&] { dequantize_row(16, nullptr, out, 256); }), {"IQ2_XXS", "not supported"}));
  EXPECT_TRUE(has_all(error_of([&] { dequantize_row(2, nullptr, out, 31); }), {"Q4_0", "multiple"}));
  EXPECT_STREQ(ggml_type_name(3), "Q4_1");
  EXPECT_STREQ(ggml_type_name(4), "unknown");
}

// The bit layouts, on hand-packed blocks with exactly representable results (bit-exactness against
// gguf-py on random blocks is tests/fidelity/dequant_fidelity.py's job).
TEST(Gguf, DequantizeRowUnpacksFiveBitAndKQuantLayouts) {
  // Q5_0: d = 0.5; element j has low nibble j & 15 and fifth bit (qh bit j) set for odd j.
  uint8_t q50[22] = {0x00, 0x38};
  const uint32_t qh = 0xAAAAAAAAu;
  std::memcpy(q50 + 2, &qh, 4);
  for (int j = 0; j < 16; ++j) q50[6 + j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  float out[256];
  dequantize_row(static_cast<uint32_t>(GgmlType::Q5_0), q50, out, 32);
  for (int j = 0; j < 32; ++j) {
    const int q = (j < 16 ? j : 31 - j) | (j % 2 == 1 ? 16 : 0);
    EXPECT_EQ(out[j], 0.5f * static_cast<float>(q - 16)) << "Q5_0 element " << j;
  }

  // Q4_K: d = 1, dmin = 0.5, six-bit scales and mins (the last four use the high bits), every
  // byte of qs 0x21: low nibble 1 (even sub-blocks), high nibble 2 (odd sub-blocks).
  const int sc[8] = {1, 2, 3, 4, 17, 33, 49, 63}, mn[8] = {0, 1, 2, 3, 20, 40, 60, 5};
  uint8_t q4k[144] = {0x00, 0x3C, 0x00, 0x38};
  for (int j = 0; j < 4; ++j) {
    q4k[4 + j] = static_cast<uint8_t>(sc[j] | (sc[j + 4] >> 4) << 6);
    q4k[8 + j] = static_cast<uint8_t>(mn[j] | (mn[j + 4] >> 4) << 6);
    q4k[12 + j] = static_cast<uint8_t>((sc[j + 4] & 15) | (mn[j + 4] & 15) << 4);
  }
  std::memset(q4k + 16, 0x21, 128);
  dequantize_row(static_cast<uint32_t>(GgmlType::Q4_K), q4k, out, 256);
  for (int i = 0; i < 256; ++i) {
    const int s = i / 32;
    EXPECT_EQ(out[i], static_cast<float>(sc[s] * (s % 2 == 0 ? 1 : 2)) - 0.5f * static_cast<float>(mn[s]))
        << "Q4_K element " << i;
  }

  // Q6_K: d = 0.25, scales[i] = i - 8; ql = 0x53 (nibbles 3 and 5), qh = 0b11100100 (2-bit fields
  // 0, 1, 2, 3), so element 32j + l of each half is ((j < 2 ? 3 : 5) | j << 4) - 32.
  uint8_t q6k[210] = {};
  std::memset(q6k, 0x53, 128);
  std::memset(q6k + 128, 0xE4, 64);
  for (int i = 0; i < 16; ++i) q6k[192 + i] = static_cast<uint8_t>(static_cast<int8_t>(i - 8));
  q6k[208] = 0x00;
  q6k[209] = 0x34;
  dequantize_row(static_cast<uint32_t>(GgmlType::Q6_K), q6k, out, 256);
  for (int i = 0; i < 256; ++i) {
    const int j = i % 128 / 32;
    const int q = ((j < 2 ? 3 : 5) | j << 4) - 32;
    EXPECT_EQ(out[i], 0.25f * static_cast<float>(i / 16 - 8) * static_cast<float>(q)) << "Q6_K element " << i;
  }

  // Q8_K: f32 d = -1.5, qs[j] = j - 128; bsums are not used.
  uint8_t q8k[292] = {};
  const float d8 = -1.5f;
  std::memcpy(q8k, &d8, 4);
  for (int j = 0; j < 256; ++j) q8k[4 + j] = static_cast<uint8_t>(j ^ 0x80);
  dequantize_row(static_cast<uint32_t>(GgmlType::Q8_K), q8k, out, 256);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(out[j], -1.5f * static_cast<float>(j - 128)) << "Q8_K element " << j;
}

TEST(Gguf, BadMagicIsRejected) {
  TempDir tmp;
  std::string bytes = crafted_gguf();
  bytes[3] = 'X';
  write_bytes(tmp / "x.gguf", bytes);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "x.gguf"); }), {"x.gguf", "bad magic"}));
  write_bytes(tmp / "empty.gguf", "");
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "empty.gguf"); }), {"empty.gguf", "too short"}));
}

TEST(Gguf, UnsupportedVersionIsRejected) {
  TempDir tmp;
  for (uint32_t v : {1u, 4u, 0x03000000u}) {
    Bytes b;
    b.raw("GGUF").u32(v).u64(0).u64(0);
    write_bytes(tmp / "v.gguf", b.b);
    EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "v.gguf"); }),
                        {"unsupported GGUF version", std::to_string(v).c_str()}));
  }
}

TEST(Gguf, TruncatedHeaderAndMetadataAreRejected) {
  TempDir tmp;
  Bytes b;
  b.raw("GGUF").u32(3).u64(0);   // no metadata count
  write_bytes(tmp / "t.gguf", b.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "t.gguf"); }), {"t.gguf", "truncated", "metadata count"}));

  Bytes m = gguf_header(0, 1);
  m.str("some.key").u32(kU64).u32(7);   // u64 value cut short
  write_bytes(tmp / "m.gguf", m.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "m.gguf"); }), {"truncated", "'some.key'"}));
}

TEST(Gguf, LengthsPastEndOfFileAreRejected) {
  TempDir tmp;
  Bytes k = gguf_header(0, 1);
  k.u64(1000).raw(std::string(20, 'k'));   // key length 1000, 20 bytes left
  write_bytes(tmp / "k.gguf", k.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "k.gguf"); }), {"length 1000", "past end of file"}));

  Bytes s = gguf_header(0, 1);
  s.str("general.name").u32(kStr).u64(uint64_t{1} << 62).raw("abc");
  write_bytes(tmp / "s.gguf", s.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "s.gguf"); }), {"'general.name'", "past end of file"}));
}

TEST(Gguf, AbsurdCountsAreRejectedBeforeAllocating) {
  TempDir tmp;
  Bytes kv = gguf_header(0, uint64_t{1} << 40);
  kv.raw(std::string(64, '\0'));
  write_bytes(tmp / "kv.gguf", kv.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "kv.gguf"); }), {"absurd metadata count 1099511627776"}));

  Bytes nt = gguf_header(uint64_t{1} << 50, 0);
  nt.raw(std::string(64, '\0'));
  write_bytes(tmp / "nt.gguf", nt.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "nt.gguf"); }), {"absurd tensor count"}));

  Bytes arr = gguf_header(0, 1);
  arr.str("tokenizer.ggml.tokens").u32(kArr).u32(kStr).u64(uint64_t{1} << 50).str("a");
  write_bytes(tmp / "arr.gguf", arr.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "arr.gguf"); }),
                      {"absurd array length", "'tokenizer.ggml.tokens'"}));

  Bytes arr2 = gguf_header(0, 1);
  arr2.str("scores").u32(kArr).u32(kF32).u64(uint64_t{1} << 61).f32(1.0f);
  write_bytes(tmp / "arr2.gguf", arr2.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "arr2.gguf"); }), {"absurd array length", "'scores'"}));
}

TEST(Gguf, UnknownValueTypeIsRejected) {
  TempDir tmp;
  Bytes b = gguf_header(0, 1);
  b.str("odd.key").u32(99).u64(0);
  write_bytes(tmp / "u.gguf", b.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "u.gguf"); }), {"'odd.key'", "unknown value type 99"}));

  Bytes a = gguf_header(0, 1);
  a.str("odd.array").u32(kArr).u32(42).u64(1).u64(0);
  write_bytes(tmp / "a.gguf", a.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "a.gguf"); }), {"'odd.array'", "unknown array element type 42"}));
}

TEST(Gguf, DuplicateKeyAndBadAlignmentAreRejected) {
  TempDir tmp;
  Bytes d = gguf_header(0, 2);
  d.str("k").u32(kU8).u8(1).str("k").u32(kU8).u8(2);
  write_bytes(tmp / "d.gguf", d.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "d.gguf"); }), {"duplicate metadata key 'k'"}));

  Bytes al = gguf_header(0, 1);
  al.str("general.alignment").u32(kU32).u32(48);
  write_bytes(tmp / "al.gguf", al.b);
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "al.gguf"); }), {"general.alignment 48", "power of two"}));
}

// One tensor (name "blk.0.w"), given n_dims/ne/type/offset, followed by `data_bytes` of data.
std::string one_tensor_gguf(std::vector<uint64_t> ne, uint32_t type, uint64_t offset, size_t data_bytes) {
  Bytes b = gguf_header(1, 0);
  b.str("blk.0.w").u32(static_cast<uint32_t>(ne.size()));
  for (uint64_t n : ne) b.u64(n);
  b.u32(type).u64(offset);
  b.pad_to(32);
  b.raw(std::string(data_bytes, '\x11'));
  return b.b;
}

TEST(Gguf, BadTensorInfosAreRejected) {
  TempDir tmp;
  write_bytes(tmp / "ok.gguf", one_tensor_gguf({4, 2}, 0, 0, 32));
  EXPECT_EQ(GgufFile(tmp / "ok.gguf").dequantize("blk.0.w").sizes().vec(), (std::vector<int64_t>{2, 4}));

  write_bytes(tmp / "dims.gguf", one_tensor_gguf({1, 1, 1, 1, 1}, 0, 0, 32));
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "dims.gguf"); }), {"'blk.0.w'", "n_dims 5"}));

  write_bytes(tmp / "type.gguf", one_tensor_gguf({4}, 99, 0, 32));
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "type.gguf"); }), {"'blk.0.w'", "unknown ggml type id 99"}));

  write_bytes(tmp / "past.gguf", one_tensor_gguf({4, 2}, 0, 1 << 20, 32));
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "past.gguf"); }), {"'blk.0.w'", "past end of file"}));

  write_bytes(tmp / "short.gguf", one_tensor_gguf({4, 2}, 0, 0, 31));   // one byte of data missing
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "short.gguf"); }), {"'blk.0.w'", "past end of file"}));

  write_bytes(tmp / "huge.gguf", one_tensor_gguf({uint64_t{1} << 40, uint64_t{1} << 30}, 0, 0, 32));
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "huge.gguf"); }), {"'blk.0.w'", "too many elements"}));

  write_bytes(tmp / "row.gguf", one_tensor_gguf({48}, 8, 0, 64));   // Q8_0 row not a multiple of 32
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "row.gguf"); }), {"'blk.0.w'", "multiple", "Q8_0"}));

  write_bytes(tmp / "unal.gguf", one_tensor_gguf({4}, 0, 8, 64));
  EXPECT_TRUE(has_all(error_of([&] { GgufFile g(tmp / "unal.gguf"); }), {"'blk.0.w'", "alignment"}));
}

TEST(Gguf, UnsupportedTypeFailsAtDequantizeNamingIt) {
  TempDir tmp;
  write_bytes(tmp / "iq2.gguf", one_tensor_gguf({256}, static_cast<uint32_t>(GgmlType::IQ2_XXS), 0, 66));
  GgufFile g(tmp / "iq2.gguf");   // parses: IQ2_XXS is a known type
  EXPECT_EQ(g.find("blk.0.w")->nbytes, 66u);
  EXPECT_TRUE(has_all(error_of([&] { g.dequantize("blk.0.w"); }), {"iq2.gguf", "'blk.0.w'", "IQ2_XXS", "cannot dequantise"}));
}

TEST(Gguf, EveryTruncationOfCraftedFileIsAnError) {
  TempDir tmp;
  const std::string full = crafted_gguf();
  write_bytes(tmp / "full.gguf", full);
  EXPECT_NO_THROW(GgufFile(tmp / "full.gguf"));
  for (size_t n = 0; n < full.size(); ++n) {
    write_bytes(tmp / "cut.gguf", full.substr(0, n));
    const std::string msg = error_of([&] { GgufFile g(tmp / "cut.gguf"); });
    EXPECT_TRUE(has_all(msg, {"[io/gguf]", "cut.gguf"})) << "prefix of " << n << " bytes";
  }
}

const char* smollm2_path() {
  const char* p = std::getenv("SECATEUR_GGUF");
  return p != nullptr && fs::exists(p) ? p : nullptr;
}

TEST(GgufSmolLM2, HeaderShapesAndMetadata) {
  const char* path = smollm2_path();
  if (path == nullptr) GTEST_SKIP() << "set SECATEUR_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf";
  GgufFile g(path);
  EXPECT_EQ(g.version(), 3u);
  EXPECT_EQ(g.tensors().size(), 272u);
  EXPECT_EQ(g.get_string("general.architecture"), "llama");
  EXPECT_EQ(g.get_int("llama.block_count"), 30);
  EXPECT_EQ(g.get_int("llama.embedding_length"), 576);
  EXPECT_EQ(g.get_string_array("tokenizer.ggml.tokens").size(), 49152u);
  const GgufTensorInfo* emb = g.find("token_embd.weight");
  ASSERT_NE(emb, nullptr);
  EXPECT_EQ(emb->shape, (std::vector<int64_t>{49152, 576}));
  at::Tensor norm = g.dequantize("output_norm.weight");
  EXPECT_EQ(norm.sizes().vec(), (std::vector<int64_t>{576}));
  at::Tensor q = g.dequantize("blk.0.attn_q.weight");
  EXPECT_EQ(q.sizes().vec(), (std::vector<int64_t>{576, 576}));
  EXPECT_TRUE(q.isfinite().all().item<bool>());
  EXPECT_GT(q.abs().max().item<float>(), 0.0f);
}

TEST(GgufSmolLM2, TruncatedCopiesAreErrorsNotCrashes) {
  const char* path = smollm2_path();
  if (path == nullptr) GTEST_SKIP() << "set SECATEUR_GGUF to SmolLM2-135M-Instruct.Q4_1.gguf";
  TempDir tmp;
  const std::string cut = tmp / "cut.gguf";
  fs::copy_file(path, cut);
  const uint64_t size = fs::file_size(cut);
  // Descending, so each step is one ftruncate of the same copy: tensor data, tensor table,
  // tokenizer arrays, metadata, header.
  for (uint64_t n : {size - 1, size / 2, uint64_t{4} << 20, uint64_t{1} << 20, uint64_t{100000}, uint64_t{1000},
                     uint64_t{100}, uint64_t{24}, uint64_t{20}, uint64_t{8}, uint64_t{4}, uint64_t{3}, uint64_t{0}}) {
    fs::resize_file(cut, n);
    const std::string msg = error_of([&] { GgufFile g(cut); });
    EXPECT_TRUE(has_all(msg, {"[io/gguf]", "cut.gguf"})) << "truncated to " << n << " bytes";
  }
}

// ---------------------------------------------------------------------------------------------
// safetensors

// A safetensors file with the given header text (length written in front) and data bytes.
std::string st_bytes(const std::string& header, const std::string& data) {
  Bytes b;
  b.u64(header.size()).raw(header).raw(data);
  return b.b;
}

std::vector<std::pair<std::string, at::Tensor>> assorted_tensors() {
  at::Tensor f32 = at::randn({4, 6});
  f32.data_ptr<float>()[3] = std::nanf("");
  return {
      {"model.f32", f32},
      {"model.bf16", at::randn({3, 5}).to(at::kBFloat16)},
      {"model.f16", at::randn({7}).to(at::kHalf)},
      {"model.f64", at::randn({2, 2}, at::TensorOptions().dtype(at::kDouble))},
      {"model.i64", at::randint(-1000, 1000, {5}, at::TensorOptions().dtype(at::kLong))},
      {"model.i32", at::randint(-1000, 1000, {2, 3}, at::TensorOptions().dtype(at::kInt))},
      {"model.i16", at::randint(-1000, 1000, {3}, at::TensorOptions().dtype(at::kShort))},
      {"model.i8", at::randint(-128, 128, {9}, at::TensorOptions().dtype(at::kChar))},
      {"model.u8", at::randint(0, 256, {2, 2, 2}, at::TensorOptions().dtype(at::kByte))},
      {"model.bool", at::randint(0, 2, {5}, at::TensorOptions().dtype(at::kByte)).to(at::kBool)},
      {"model.transposed", at::randn({3, 4}).t()},   // non-contiguous input
      {"model.scalar", at::randn({})},
      {"model.empty", at::randn({0, 3})},
  };
}

TEST(Safetensors, RoundTripKeepsBitsDtypesOrderAndMetadata) {
  TempDir tmp;
  const auto tensors = assorted_tensors();
  const std::map<std::string, std::string> meta{{"format", "pt"}, {"source", "unit test"}};
  write_safetensors(tmp / "m.safetensors", tensors, meta);
  EXPECT_FALSE(any_temp_file(tmp.path()));

  const std::string bytes = read_bytes(tmp / "m.safetensors");
  uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  EXPECT_EQ(header_len % 8, 0u);

  SafetensorsFile f(tmp / "m.safetensors");
  EXPECT_EQ(f.metadata(), meta);
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : tensors) expected_names.push_back(name);
  EXPECT_EQ(f.names(), expected_names);
  for (const auto& [name, t] : tensors) {
    EXPECT_TRUE(same_bits(f.tensor(name), t)) << name;
    EXPECT_EQ(f.info(name).shape, t.sizes().vec()) << name;
  }
  EXPECT_EQ(f.info("model.bf16").dtype, "BF16");
  EXPECT_EQ(f.info("model.bool").dtype, "BOOL");
  EXPECT_EQ(f.info("model.f32").begin, 0u);
  EXPECT_EQ(f.info("model.f32").end, 96u);
}

TEST(Safetensors, TensorsAreViewsOfTheMappingThatKeepItAlive) {
  TempDir tmp;
  at::Tensor w = at::arange(48, at::TensorOptions().dtype(at::kFloat)).reshape({6, 8});
  write_safetensors(tmp / "w.safetensors", {{"w", w}});
  at::Tensor view;
  {
    SafetensorsFile f(tmp / "w.safetensors");
    EXPECT_EQ(f.tensor("w").data_ptr(), f.tensor("w").data_ptr());   // no copy
    view = f.tensor("w");
  }   // the file object is gone; the mapping must not be
  EXPECT_TRUE(same_bits(view, w));
}

TEST(Safetensors, MisalignedDataIsCopiedNotMisread) {
  // A foreign writer may leave the header length odd; F32 data then starts at an odd address.
  TempDir tmp;
  const float vals[3] = {1.5f, -2.0f, 1e-30f};
  std::string data(reinterpret_cast<const char*>(vals), sizeof(vals));
  write_bytes(tmp / "odd.safetensors",
              st_bytes(R"({"w":{"dtype":"F32","shape":[3],"data_offsets":[0,12]}})", data));   // 55-byte header
  SafetensorsFile f(tmp / "odd.safetensors");
  EXPECT_NE(f.data_offset() % 4, 0u);
  EXPECT_EQ(values(f.tensor("w")), (std::vector<float>{1.5f, -2.0f, 1e-30f}));
  EXPECT_EQ(values(f.slice("w", 0, 1, 3)), (std::vector<float>{-2.0f, 1e-30f}));
}

TEST(Safetensors, SliceReturnsTheRightRowsAndColumns) {
  TempDir tmp;
  at::Tensor w = at::arange(48, at::TensorOptions().dtype(at::kFloat)).reshape({6, 8});
  write_safetensors(tmp / "w.safetensors", {{"w", w}});
  SafetensorsFile f(tmp / "w.safetensors");
  at::Tensor rows = f.slice("w", 0, 2, 5);
  EXPECT_EQ(rows.sizes().vec(), (std::vector<int64_t>{3, 8}));
  EXPECT_TRUE(same_bits(rows, w.narrow(0, 2, 3)));
  EXPECT_EQ(static_cast<const char*>(rows.data_ptr()),
            static_cast<const char*>(f.tensor("w").data_ptr()) + 2 * 8 * sizeof(float));   // a view
  at::Tensor cols = f.slice("w", 1, 3, 7);
  EXPECT_EQ(cols.sizes().vec(), (std::vector<int64_t>{6, 4}));
  EXPECT_TRUE(same_bits(cols, w.narrow(1, 3, 4)));
  EXPECT_EQ(values(cols)[0], 3.0f);
  EXPECT_EQ(values(cols)[4], 11.0f);
  EXPECT_TRUE(same_bits(f.slice("w", -1, 0, 1), w.narrow(1, 0, 1)));
  EXPECT_EQ(f.slice("w", 0, 4, 4).numel(), 0);
  EXPECT_TRUE(has_all(error_of([&] { f.slice("w", 0, 5, 7); }), {"'w'", "out of range"}));
  EXPECT_TRUE(has_all(error_of([&] { f.slice("w", 2, 0, 1); }), {"'w'", "no dim 2"}));
}

TEST(Safetensors, ShardedDirectoryRoundTripsThroughTheIndex) {
  TempDir tmp;
  const auto tensors = assorted_tensors();
  const std::string dir = tmp / "ckpt";
  write_safetensors_dir(dir, tensors, 100, {{"format", "pt"}});
  const auto files = files_in(dir);
  EXPECT_TRUE(std::find(files.begin(), files.end(), "model.safetensors.index.json") != files.end());
  EXPECT_TRUE(std::find(files.begin(), files.end(), "model.safetensors") == files.end());
  EXPECT_GT(files.size(), 3u);
  EXPECT_TRUE(std::find(files.begin(), files.end(), "model-00001-of-" + files[0].substr(15, 5) + ".safetensors") !=
              files.end());

  SafetensorsCheckpoint ck(dir);
  EXPECT_GT(ck.files().size(), 2u);
  std::vector<std::string> expected_names;
  for (const auto& [name, t] : tensors) expected_names.push_back(name);
  EXPECT_EQ(ck.names(), expected_names);
  for (const auto& [name, t] : tensors) EXPECT_TRUE(same_bits(ck.tensor(name), t)) << name;
  EXPECT_TRUE(same_bits(ck.slice("model.f32", 1, 2, 4), tensors[0].second.narrow(1, 2, 2)));
  EXPECT_EQ(ck.info("model.bf16").dtype, "BF16");
  EXPECT_EQ(ck.file_of("model.f32").metadata().at("format"), "pt");
  EXPECT_TRUE(has_all(error_of([&] { ck.tensor("lm_head.weight"); }), {"'lm_head.weight'", "absent"}));
  EXPECT_FALSE(any_temp_file(dir));

  // Rewriting the same directory unsharded leaves only model.safetensors.
  write_safetensors_dir(dir, tensors, uint64_t{1} << 30);
  EXPECT_EQ(files_in(dir), (std::vector<std::string>{"model.safetensors"}));
  SafetensorsCheckpoint single(dir);
  for (const auto& [name, t] : tensors) EXPECT_TRUE(same_bits(single.tensor(name), t)) << name;
  SafetensorsCheckpoint by_file(dir + "/model.safetensors");
  EXPECT_EQ(by_file.names(), expected_names);
}

TEST(Safetensors, FileShorterThanEightBytesIsRejected) {
  TempDir tmp;
  write_bytes(tmp / "s.safetensors", "abc");
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "s.safetensors"); }),
                      {"s.safetensors", "3 bytes", "shorter than"}));
}

TEST(Safetensors, HeaderLongerThanFileIsRejected) {
  TempDir tmp;
  Bytes b;
  b.u64(uint64_t{9} << 60).raw("{}");
  write_bytes(tmp / "h.safetensors", b.b);
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "h.safetensors"); }),
                      {"h.safetensors", "exceeds file size"}));
}

TEST(Safetensors, InvalidJsonIsRejected) {
  TempDir tmp;
  write_bytes(tmp / "j.safetensors", st_bytes("{\"a\": [1, 2", ""));
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "j.safetensors"); }), {"j.safetensors", "invalid JSON"}));
  write_bytes(tmp / "arr.safetensors", st_bytes("[1, 2]", ""));
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "arr.safetensors"); }), {"not a JSON object"}));
}

TEST(Safetensors, UnknownDtypeIsRejectedByName) {
  TempDir tmp;
  write_bytes(tmp / "d.safetensors",
              st_bytes(R"({"w": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 2]}})", "ab"));
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "d.safetensors"); }), {"'w'", "unknown dtype 'Q7'"}));
}

TEST(Safetensors, BadDataOffsetsAreRejected) {
  TempDir tmp;
  write_bytes(tmp / "past.safetensors",
              st_bytes(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", std::string(12, 'x')));
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "past.safetensors"); }),
                      {"'w'", "[0, 16]", "past end of data"}));
  write_bytes(tmp / "size.safetensors",
              st_bytes(R"({"w": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 16]}})", std::string(16, 'x')));
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "size.safetensors"); }),
                      {"'w'", "span 16 bytes", "[2, 3]", "needs 24"}));
  write_bytes(tmp / "neg.safetensors",
              st_bytes(R"({"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}})", std::string(4, 'x')));
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsFile f(tmp / "neg.safetensors"); }), {"'w'", "data_offsets"}));
}

TEST(Safetensors, MissingTensorNameSaysItIsAbsent) {
  TempDir tmp;
  write_safetensors(tmp / "m.safetensors", {{"a", at::randn({2})}});
  SafetensorsFile f(tmp / "m.safetensors");
  EXPECT_FALSE(f.has("b"));
  EXPECT_TRUE(has_all(error_of([&] { f.tensor("b"); }), {"m.safetensors", "'b'", "absent"}));
  EXPECT_TRUE(has_all(error_of([&] { f.info("b"); }), {"'b'", "absent"}));
}

TEST(Safetensors, MissingShardOrCheckpointIsRejected) {
  TempDir tmp;
  const std::string dir = tmp / "ckpt";
  write_safetensors_dir(dir, assorted_tensors(), 100);
  const std::string victim = "model-00002-of-" + files_in(dir)[0].substr(15, 5) + ".safetensors";
  fs::remove(fs::path(dir) / victim);
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsCheckpoint ck(dir); }),
                      {"model.safetensors.index.json", victim.c_str(), "missing"}));

  fs::create_directories(tmp / "empty");
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsCheckpoint ck(tmp / "empty"); }), {"no model.safetensors"}));
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsCheckpoint ck(tmp / "nowhere"); }), {"nowhere", "no such file"}));

  write_bytes(tmp / "bad.index.json", R"({"weight_map": {"w": "../escape.safetensors"}})");
  EXPECT_TRUE(has_all(error_of([&] { SafetensorsCheckpoint ck(tmp / "bad.index.json"); }), {"must be relative"}));
}

TEST(Safetensors, WriterRejectsBadInputBeforeTouchingTheFile) {
  TempDir tmp;
  write_bytes(tmp / "m.safetensors", "old contents");
  EXPECT_TRUE(has_all(error_of([&] {
                        write_safetensors(tmp / "m.safetensors", {{"a", at::randn({2})}, {"a", at::randn({3})}});
                      }),
                      {"duplicate tensor name 'a'"}));
  EXPECT_TRUE(has_all(error_of([&] {
                        write_safetensors(tmp / "m.safetensors",
                                          {{"ok", at::randn({2})}, {"c", at::randn({2}).to(at::kComplexFloat)}});
                      }),
                      {"'c'", "cannot be stored"}));
  EXPECT_EQ(read_bytes(tmp / "m.safetensors"), "old contents");
  EXPECT_EQ(files_in(tmp.path()), (std::vector<std::string>{"m.safetensors"}));
}

// ---------------------------------------------------------------------------------------------
// Atomic files

TEST(AtomicFile, WriteFileAtomicReplacesContentAndLeavesNoTemp) {
  TempDir tmp;
  write_file_atomic(tmp / "a.txt", "first");
  write_file_atomic(tmp / "a.txt", "second");
  EXPECT_EQ(read_bytes(tmp / "a.txt"), "second");
  EXPECT_EQ(files_in(tmp.path()), (std::vector<std::string>{"a.txt"}));
}

TEST(AtomicFile, ExceptionMidWriteKeepsOldFileAndRemovesTemp) {
  TempDir tmp;
  write_file_atomic(tmp / "a.txt", "old");
  EXPECT_THROW(
      {
        AtomicFile f(tmp / "a.txt");
        f.write("new but unfinished");
        EXPECT_TRUE(fs::exists(f.temp_path()));
        throw std::runtime_error("interrupted");
      },
      std::runtime_error);
  EXPECT_EQ(read_bytes(tmp / "a.txt"), "old");
  EXPECT_EQ(files_in(tmp.path()), (std::vector<std::string>{"a.txt"}));
}

TEST(AtomicFile, FailedRenameThrowsAndRemovesTemp) {
  TempDir tmp;
  fs::create_directories(tmp / "target");   // renaming a file over a directory fails
  write_bytes(tmp / "target/keep.txt", "keep");
  EXPECT_TRUE(has_all(error_of([&] { write_file_atomic(tmp / "target", "bytes"); }), {"target", "cannot rename"}));
  EXPECT_EQ(files_in(tmp.path()), (std::vector<std::string>{"target"}));
  EXPECT_EQ(read_bytes(tmp / "target/keep.txt"), "keep");
  EXPECT_TRUE(has_all(error_of([&] { write_file_atomic(tmp / "no/such/dir/x", "bytes"); }), {"cannot create temp"}));
}

TEST(AtomicFile, TempNameIsPathDotTmpDotPid) {
  TempDir tmp;
  AtomicFile f(tmp / "b.bin");
  EXPECT_EQ(f.temp_path(), (tmp / "b.bin") + ".tmp." + std::to_string(::getpid()));
  f.write("xyz", 3);
  f.commit();
  EXPECT_EQ(read_bytes(tmp / "b.bin"), "xyz");
  EXPECT_TRUE(has_all(error_of([&] { f.write("more", 4); }), {"after commit"}));
}

}  // namespace
