// runtime/io/dequant.cpp — block decoders for the ggml types Secateur reads.
// Compiled with -ffp-contract=off (see CMakeLists.txt): each formula below is evaluated as the
// separate float32 multiply and add that numpy performs, so results match gguf-py bit for bit.
#include "runtime/io/dequant.h"

#include <cstring>

#include "runtime/core/check.h"

namespace secateur::io {
namespace {

struct TypeEntry {
  uint32_t id;
  GgmlTypeTraits traits;
};

// Block geometry as in ggml (and gguf-py's GGML_QUANT_SIZES).
constexpr TypeEntry kTypes[] = {
    {0, {"F32", 1, 4, true}},         {1, {"F16", 1, 2, true}},
    {2, {"Q4_0", 32, 18, true}},      {3, {"Q4_1", 32, 20, true}},
    {6, {"Q5_0", 32, 22, false}},     {7, {"Q5_1", 32, 24, false}},
    {8, {"Q8_0", 32, 34, true}},      {9, {"Q8_1", 32, 40, false}},
    {10, {"Q2_K", 256, 84, false}},   {11, {"Q3_K", 256, 110, false}},
    {12, {"Q4_K", 256, 144, false}},  {13, {"Q5_K", 256, 176, false}},
    {14, {"Q6_K", 256, 210, false}},  {15, {"Q8_K", 256, 292, false}},
    {16, {"IQ2_XXS", 256, 66, false}}, {17, {"IQ2_XS", 256, 74, false}},
    {18, {"IQ3_XXS", 256, 98, false}}, {19, {"IQ1_S", 256, 50, false}},
    {20, {"IQ4_NL", 32, 18, false}},  {21, {"IQ3_S", 256, 110, false}},
    {22, {"IQ2_S", 256, 82, false}},  {23, {"IQ4_XS", 256, 136, false}},
    {24, {"I8", 1, 1, false}},        {25, {"I16", 1, 2, false}},
    {26, {"I32", 1, 4, false}},       {27, {"I64", 1, 8, false}},
    {28, {"F64", 1, 8, false}},       {29, {"IQ1_M", 256, 56, false}},
    {30, {"BF16", 1, 2, true}},       {34, {"TQ1_0", 256, 54, false}},
    {35, {"TQ2_0", 256, 66, false}},  {39, {"MXFP4", 32, 17, false}},
    {40, {"NVFP4", 64, 36, false}},   {41, {"Q1_0", 128, 18, false}},
};

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline float bits_to_float(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Block layouts (little-endian, packed):
//   Q8_0: f16 d, int8 q[32]              x = q * d
//   Q4_0: f16 d, uint8 qs[16]            x[j] = d * ((qs[j] & 15) - 8), x[j+16] = d * ((qs[j] >> 4) - 8)
//   Q4_1: f16 d, f16 m, uint8 qs[16]     x[j] = d * (qs[j] & 15) + m,   x[j+16] = d * (qs[j] >> 4) + m
void dequant_q8_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 34, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const int8_t* q = reinterpret_cast<const int8_t*>(src + 2);
    for (int j = 0; j < 32; ++j) dst[j] = static_cast<float>(q[j]) * d;
  }
}

void dequant_q4_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 18, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const uint8_t* qs = src + 2;
    for (int j = 0; j < 16; ++j) {
      dst[j] = d * static_cast<float>(static_cast<int>(qs[j] & 0x0F) - 8);
      dst[j + 16] = d * static_cast<float>(static_cast<int>(qs[j] >> 4) - 8);
    }
  }
}

void dequant_q4_1(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 20, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const float m = half_to_float(load_u16(src + 2));
    const uint8_t* qs = src + 4;
    for (int j = 0; j < 16; ++j) {
      const float lo = d * static_cast<float>(qs[j] & 0x0F);   // rounded product, then the add
      const float hi = d * static_cast<float>(qs[j] >> 4);
      dst[j] = lo + m;
      dst[j + 16] = hi + m;
    }
  }
}

}  // namespace

float half_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1Fu;
  const uint32_t man = h & 0x3FFu;
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    // subnormal: man * 2^-24, exact in float32
    const float mag = static_cast<float>(man) * 5.9604644775390625e-8f;
    uint32_t bits;
    std::memcpy(&bits, &mag, 4);
    return bits_to_float(sign | bits);
  }
  if (exp == 31) return bits_to_float(sign | 0x7F800000u | (man << 13));  // inf / NaN (payload kept)
  return bits_to_float(sign | ((exp + 112u) << 23) | (man << 13));
}

float bf16_to_float(uint16_t b) { return bits_to_float(static_cast<uint32_t>(b) << 16); }

const GgmlTypeTraits* ggml_type_traits(uint32_t type) {
  for (const auto& e : kTypes)
    if (e.id == type) return &e.traits;
  return nullptr;
}

const char* ggml_type_name(uint32_t type) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  return t != nullptr ? t->name : "unknown";
}

bool ggml_type_dequantizable(uint32_t type) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  return t != nullptr && t->dequantizable;
}

void dequantize_row(uint32_t ggml_type, const uint8_t* src, float* dst, int64_t n) {
  const GgmlTypeTraits* t = ggml_type_traits(ggml_type);
  SECATEUR_CHECK(t != nullptr, "[io/dequant] unknown ggml type id {}", ggml_type);
  SECATEUR_CHECK(t->dequantizable, "[io/dequant] ggml type {} (id {}) is not supported for dequantisation", t->name,
                 ggml_type);
  SECATEUR_CHECK(n >= 0 && n % t->block_size == 0, "[io/dequant] {}: element count {} is not a multiple of block size {}",
                 t->name, n, t->block_size);
  const int64_t n_blocks = n / t->block_size;
  switch (static_cast<GgmlType>(ggml_type)) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(load_u16(src + 2 * i));
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_u16(src + 2 * i));
      return;
    case GgmlType::Q8_0:
      dequant_q8_0(src, dst, n_blocks);
      return;
    case GgmlType::Q4_0:
      dequant_q4_0(src, dst, n_blocks);
      return;
    case GgmlType::Q4_1:
      dequant_q4_1(src, dst, n_blocks);
      return;
    default:
      break;
  }
  SECATEUR_FAIL("[io/dequant] ggml type {} has no decoder", t->name);
}

}  // namespace secateur::io
