// runtime/io/dequant.h — ggml tensor types and their raw block decoders.
// The decoders reproduce PyPI gguf's gguf.quants.dequantize bit for bit (same float32 operations
// in the same order, no FMA contraction); tests/fidelity/dequant_fidelity.py checks that.
// Dequantised: F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants Q4_K, Q5_K, Q6_K,
// Q8_K (the types of llama.cpp's Q4_K_M / Q5_K_M / Q6_K files). gguf-py has no Q8_K decoder; ours
// is ggml's dequantize_row_q8_K (x = d * q), which the fidelity script mirrors in numpy.
// Every other ggml type is known by id, name and block geometry (so a GGUF holding it still parses
// and is size-checked) but not decoded.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace secateur::io {

enum class GgmlType : uint32_t {
  F32 = 0, F16 = 1, Q4_0 = 2, Q4_1 = 3, Q5_0 = 6, Q5_1 = 7, Q8_0 = 8, Q8_1 = 9,
  Q2_K = 10, Q3_K = 11, Q4_K = 12, Q5_K = 13, Q6_K = 14, Q8_K = 15,
  IQ2_XXS = 16, IQ2_XS = 17, IQ3_XXS = 18, IQ1_S = 19, IQ4_NL = 20, IQ3_S = 21, IQ2_S = 22, IQ4_XS = 23,
  I8 = 24, I16 = 25, I32 = 26, I64 = 27, F64 = 28, IQ1_M = 29, BF16 = 30,
  TQ1_0 = 34, TQ2_0 = 35, MXFP4 = 39, NVFP4 = 40, Q1_0 = 41,
};

struct GgmlTypeTraits {
  const char* name;
  int64_t block_size;   // elements per block (1 for plain types)
  int64_t type_size;    // bytes per block
  bool dequantizable;   // dequantize_row supports it
};

// nullptr for an id ggml does not define (or has retired, e.g. 4, 5, 31..33).
const GgmlTypeTraits* ggml_type_traits(uint32_t type);
// "Q4_1", "Q8_0", ...; "unknown" for an id ggml does not define.
const char* ggml_type_name(uint32_t type);
bool ggml_type_dequantizable(uint32_t type);
std::vector<std::string> dequantizable_type_names();   // in id order

// Decodes n elements (a multiple of the type's block size) from src into dst as float32.
// Throws secateur::Error for an unknown or unsupported type, or n not a multiple of the block size.
void dequantize_row(uint32_t ggml_type, const uint8_t* src, float* dst, int64_t n);

// IEEE half / bfloat16 bit patterns to float32 (exact; NaN payloads kept, as numpy does).
float half_to_float(uint16_t h);
float bf16_to_float(uint16_t b);

}  // namespace secateur::io
