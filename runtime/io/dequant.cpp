// runtime/io/dequant.cpp — block decoders for the ggml types Secateur reads.
// Compiled with -ffp-contract=off (see CMakeLists.txt): each formula below is evaluated as the
// separate float32 multiply and add that numpy performs, so results match gguf-py bit for bit.
#include "runtime/io/dequant.h"

#include <cstring>

#include "runtime/core/check.h"

namespace secateur::io {
namespace {

inline uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

inline uint32_t load_u32(const uint8_t* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
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

// 5-bit blocks: the low nibbles as in Q4_0/Q4_1, the fifth bit of element j is bit j of qh.
//   Q5_0: f16 d, u32 qh, uint8 qs[16]           x = d * (q - 16)
//   Q5_1: f16 d, f16 m, u32 qh, uint8 qs[16]    x = d * q + m
void dequant_q5_0(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 22, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const uint32_t qh = load_u32(src + 2);
    const uint8_t* qs = src + 6;
    for (int j = 0; j < 16; ++j) {
      const int lo = (qs[j] & 0x0F) | static_cast<int>(((qh >> j) & 1u) << 4);
      const int hi = (qs[j] >> 4) | static_cast<int>(((qh >> (j + 16)) & 1u) << 4);
      dst[j] = d * static_cast<float>(lo - 16);
      dst[j + 16] = d * static_cast<float>(hi - 16);
    }
  }
}

void dequant_q5_1(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 24, dst += 32) {
    const float d = half_to_float(load_u16(src));
    const float m = half_to_float(load_u16(src + 2));
    const uint32_t qh = load_u32(src + 4);
    const uint8_t* qs = src + 8;
    for (int j = 0; j < 16; ++j) {
      const uint32_t lo = (qs[j] & 0x0Fu) | (((qh >> j) & 1u) << 4);
      const uint32_t hi = (qs[j] >> 4) | (((qh >> (j + 16)) & 1u) << 4);
      const float lo_d = d * static_cast<float>(lo);   // rounded product, then the add
      const float hi_d = d * static_cast<float>(hi);
      dst[j] = lo_d + m;
      dst[j + 16] = hi_d + m;
    }
  }
}

// K-quants: super-blocks of 256 elements in sub-blocks with their own scale.
// Q4_K and Q5_K pack eight 6-bit scales sc[] and mins mn[] into 12 bytes s[]:
//   sc[j] = s[j] & 63,                          mn[j] = s[j+4] & 63                           (j < 4)
//   sc[j+4] = (s[j+8] & 15) | (s[j] >> 6) << 4,  mn[j+4] = (s[j+8] >> 4) | (s[j+4] >> 6) << 4
// and sub-block i (32 elements) decodes as x = (d * sc[i]) * q - (dmin * mn[i]).
struct SubScales {
  float scale[8];   // d * sc[i]
  float min[8];     // dmin * mn[i]
};

inline SubScales k_sub_scales(const uint8_t* block) {
  const float d = half_to_float(load_u16(block));
  const float dmin = half_to_float(load_u16(block + 2));
  const uint8_t* s = block + 4;
  SubScales out;
  for (int j = 0; j < 4; ++j) {
    out.scale[j] = d * static_cast<float>(s[j] & 63);
    out.min[j] = dmin * static_cast<float>(s[j + 4] & 63);
    out.scale[j + 4] = d * static_cast<float>((s[j + 8] & 15) | ((s[j] >> 6) << 4));
    out.min[j + 4] = dmin * static_cast<float>((s[j + 8] >> 4) | ((s[j + 4] >> 6) << 4));
  }
  return out;
}

// Q4_K: f16 d, f16 dmin, scales[12], uint8 qs[128]. Sub-blocks 2k and 2k+1 are the low and the high
// nibbles of qs[32k .. 32k+31].
// Q5_K: f16 d, f16 dmin, scales[12], uint8 qh[32], uint8 qs[128]: as Q4_K, with bit i of qh[l] the
// fifth bit of element l of sub-block i.
template <bool kFifthBit>
void dequant_k_nibbles(const uint8_t* src, float* dst, int64_t n_blocks) {
  constexpr int64_t kBlockBytes = kFifthBit ? 176 : 144;
  for (int64_t b = 0; b < n_blocks; ++b, src += kBlockBytes, dst += 256) {
    const SubScales sub = k_sub_scales(src);
    const uint8_t* qh = src + 16;
    const uint8_t* qs = src + (kFifthBit ? 48 : 16);
    for (int k = 0; k < 4; ++k) {
      const float d_lo = sub.scale[2 * k], m_lo = sub.min[2 * k];
      const float d_hi = sub.scale[2 * k + 1], m_hi = sub.min[2 * k + 1];
      const uint8_t* q = qs + 32 * k;
      float* y = dst + 64 * k;
      for (int l = 0; l < 32; ++l) {
        int q_lo = q[l] & 0x0F, q_hi = q[l] >> 4;
        if constexpr (kFifthBit) {
          const int h = qh[l] >> (2 * k);
          q_lo |= (h & 1) << 4;
          q_hi |= (h & 2) << 3;
        }
        const float lo = d_lo * static_cast<float>(q_lo);   // rounded product, then the subtraction
        const float hi = d_hi * static_cast<float>(q_hi);
        y[l] = lo - m_lo;
        y[l + 32] = hi - m_hi;
      }
    }
  }
}

// Q6_K: uint8 ql[128], uint8 qh[64], int8 scales[16], f16 d. Each half h of 128 elements takes
// ql[64h ..], qh[32h ..] and scales[8h ..]; element 32j + l of the half (j < 4, l < 32) is
//   q = (nibble j/2 of ql[64h + 32(j%2) + l]) | ((qh[32h + l] >> 2j) & 3) << 4,
//   x = (d * scales[8h + 2j + l/16]) * (q - 32).
void dequant_q6_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 210, dst += 256) {
    const float d = half_to_float(load_u16(src + 208));
    const int8_t* scales = reinterpret_cast<const int8_t*>(src + 192);
    float ds[16];
    for (int i = 0; i < 16; ++i) ds[i] = d * static_cast<float>(scales[i]);
    for (int h = 0; h < 2; ++h) {
      const uint8_t* ql = src + 64 * h;
      const uint8_t* qh = src + 128 + 32 * h;
      const float* dh = ds + 8 * h;
      float* y = dst + 128 * h;
      for (int g = 0; g < 2; ++g) {   // l in [16g, 16g + 16): one scale per (j, g)
        const float d0 = dh[g], d1 = dh[2 + g], d2 = dh[4 + g], d3 = dh[6 + g];
        for (int l = 16 * g; l < 16 * g + 16; ++l) {
          const int q0 = ((ql[l] & 0x0F) | ((qh[l] & 0x03) << 4)) - 32;
          const int q1 = ((ql[l + 32] & 0x0F) | ((qh[l] & 0x0C) << 2)) - 32;
          const int q2 = ((ql[l] >> 4) | (qh[l] & 0x30)) - 32;
          const int q3 = ((ql[l + 32] >> 4) | ((qh[l] & 0xC0) >> 2)) - 32;
          y[l] = d0 * static_cast<float>(q0);
          y[l + 32] = d1 * static_cast<float>(q1);
          y[l + 64] = d2 * static_cast<float>(q2);
          y[l + 96] = d3 * static_cast<float>(q3);
        }
      }
    }
  }
}

// Q8_K: f32 d, int8 qs[256], int16 bsums[16] (sums for dot products; not needed here). x = d * q.
void dequant_q8_k(const uint8_t* src, float* dst, int64_t n_blocks) {
  for (int64_t b = 0; b < n_blocks; ++b, src += 292, dst += 256) {
    const float d = bits_to_float(load_u32(src));
    const int8_t* q = reinterpret_cast<const int8_t*>(src + 4);
    for (int j = 0; j < 256; ++j) dst[j] = d * static_cast<float>(q[j]);
  }
}

// Plain types: one element a "block".
void copy_f32(const uint8_t* src, float* dst, int64_t n) { std::memcpy(dst, src, static_cast<size_t>(n) * 4); }
void convert_f16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = half_to_float(load_u16(src + 2 * i));
}
void convert_bf16(const uint8_t* src, float* dst, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(load_u16(src + 2 * i));
}

using BlockDecoder = void (*)(const uint8_t* src, float* dst, int64_t n_blocks);

struct TypeEntry {
  uint32_t id;
  GgmlTypeTraits traits;
  BlockDecoder decode;   // nullptr: known, not decoded
};

constexpr TypeEntry entry(uint32_t id, const char* name, int64_t block, int64_t bytes, BlockDecoder decode = nullptr) {
  return {id, {name, block, bytes, decode != nullptr}, decode};
}

// Block geometry as in ggml (and gguf-py's GGML_QUANT_SIZES), and each decoder.
constexpr TypeEntry kTypes[] = {
    entry(0, "F32", 1, 4, copy_f32),          entry(1, "F16", 1, 2, convert_f16),
    entry(2, "Q4_0", 32, 18, dequant_q4_0),   entry(3, "Q4_1", 32, 20, dequant_q4_1),
    entry(6, "Q5_0", 32, 22, dequant_q5_0),   entry(7, "Q5_1", 32, 24, dequant_q5_1),
    entry(8, "Q8_0", 32, 34, dequant_q8_0),   entry(9, "Q8_1", 32, 40),
    entry(10, "Q2_K", 256, 84),               entry(11, "Q3_K", 256, 110),
    entry(12, "Q4_K", 256, 144, dequant_k_nibbles<false>), entry(13, "Q5_K", 256, 176, dequant_k_nibbles<true>),
    entry(14, "Q6_K", 256, 210, dequant_q6_k), entry(15, "Q8_K", 256, 292, dequant_q8_k),
    entry(16, "IQ2_XXS", 256, 66),            entry(17, "IQ2_XS", 256, 74),
    entry(18, "IQ3_XXS", 256, 98),            entry(19, "IQ1_S", 256, 50),
    entry(20, "IQ4_NL", 32, 18),              entry(21, "IQ3_S", 256, 110),
    entry(22, "IQ2_S", 256, 82),              entry(23, "IQ4_XS", 256, 136),
    entry(24, "I8", 1, 1),                    entry(25, "I16", 1, 2),
    entry(26, "I32", 1, 4),                   entry(27, "I64", 1, 8),
    entry(28, "F64", 1, 8),                   entry(29, "IQ1_M", 256, 56),
    entry(30, "BF16", 1, 2, convert_bf16),    entry(34, "TQ1_0", 256, 54),
    entry(35, "TQ2_0", 256, 66),              entry(39, "MXFP4", 32, 17),
    entry(40, "NVFP4", 64, 36),               entry(41, "Q1_0", 128, 18),
};

const TypeEntry* find_type(uint32_t type) {
  for (const TypeEntry& e : kTypes) {
    if (e.id == type) return &e;
  }
  return nullptr;
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
  const TypeEntry* e = find_type(type);
  return e != nullptr ? &e->traits : nullptr;
}

const char* ggml_type_name(uint32_t type) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  return t != nullptr ? t->name : "unknown";
}

bool ggml_type_dequantizable(uint32_t type) {
  const GgmlTypeTraits* t = ggml_type_traits(type);
  return t != nullptr && t->dequantizable;
}

std::vector<std::string> dequantizable_type_names() {
  std::vector<std::string> names;
  for (const TypeEntry& e : kTypes) {
    if (e.traits.dequantizable) names.emplace_back(e.traits.name);
  }
  return names;
}

void dequantize_row(uint32_t ggml_type, const uint8_t* src, float* dst, int64_t n) {
  const TypeEntry* e = find_type(ggml_type);
  SECATEUR_CHECK(e != nullptr, "[io/dequant] unknown ggml type id {}", ggml_type);
  const GgmlTypeTraits& t = e->traits;
  SECATEUR_CHECK(e->decode != nullptr, "[io/dequant] ggml type {} (id {}) is not supported for dequantisation", t.name,
                 ggml_type);
  SECATEUR_CHECK(n >= 0 && n % t.block_size == 0, "[io/dequant] {}: element count {} is not a multiple of block size {}",
                 t.name, n, t.block_size);
  e->decode(src, dst, n / t.block_size);
}

}  // namespace secateur::io
