// R's serialisation format and the zlib records of a lazy-load database (the Austen corpus). The
// first byte picks: 0 unserialize the rest; 1 inflate it, then unserialize; 2 read it as a .rdb
// record (a 4-byte big-endian size, then the zlib stream), inflate it to that size, unserialize.
#include "runtime/text/rdata.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const std::string_view in = fuzz::text(data + 1, size - 1);
  fuzz::expect_clean([&] {
    switch (data[0] % 3) {
      case 0:
        (void)text::rdata::unserialize(in, "fuzz");
        break;
      case 1:
        (void)text::rdata::unserialize(text::rdata::inflate(in, 0, "fuzz"), "fuzz");
        break;
      default: {
        if (in.size() < 4) return;
        const size_t expected = size_t{static_cast<uint8_t>(in[0])} << 24 | size_t{static_cast<uint8_t>(in[1])} << 16 |
                                size_t{static_cast<uint8_t>(in[2])} << 8 | size_t{static_cast<uint8_t>(in[3])};
        const std::string out = text::rdata::inflate(in.substr(4), expected, "fuzz");
        if (expected && out.size() != expected) fuzz::finding("inflate returned another size than the one announced");
        (void)text::rdata::unserialize(out, "fuzz");
      }
    }
  });
  return 0;
}
