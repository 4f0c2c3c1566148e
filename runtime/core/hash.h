// runtime/core/hash.h — FNV-1a (64-bit): the one hash of decisions, checkpoints and calibration data.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace secateur {

class Fnv1a {
 public:
  void bytes(const void* data, size_t n) {
    const auto* p = static_cast<const unsigned char*>(data);
    for (size_t i = 0; i < n; ++i) {
      h_ ^= p[i];
      h_ *= 1099511628211ull;
    }
  }
  void text(std::string_view s) { bytes(s.data(), s.size()); }
  void integer(int64_t v) {   // its 8 bytes, least significant first (on every host)
    for (int i = 0; i < 8; ++i) {
      const auto b = static_cast<unsigned char>((v >> (8 * i)) & 0xff);
      bytes(&b, 1);
    }
  }
  uint64_t value() const { return h_; }

 private:
  uint64_t h_ = 1469598103934665603ull;
};

}  // namespace secateur
