// tools/fuzz/fuzz.h — what every harness shares. A harness is a libFuzzer entry point
// (LLVMFuzzerTestOneInput) over one reader of outside data; it is built twice: with clang, libFuzzer,
// AddressSanitizer and UBSan for fuzzing (-DSECATEUR_FUZZ=ON), and in the main build as a replay
// program that runs the kept seeds and regression inputs through the same code (replay_main.cpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <string_view>

#include "runtime/core/check.h"

namespace secateur::fuzz {

// Writes the input to `name` in this process's scratch directory (a tmpfs when there is one) and
// returns its path: the readers take paths, as users give them. Rewritten on every call.
std::string write_input(const uint8_t* data, size_t size, const std::string& name);
std::string scratch_dir();   // created on first use, removed at exit

// The input as text (every byte kept).
inline std::string_view text(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A property of a clean run that does not hold: a finding, like a crash.
[[noreturn]] inline void finding(const std::string& what) {
  std::fprintf(stderr, "[fuzz] finding: %s\n", what.c_str());
  std::abort();
}

// Runs body. A secateur::Error is the answer malformed input must get (one line naming what is
// wrong); any other exception escaping a reader is a finding: the user would see a message that
// names neither the file nor the place.
template <typename F>
void expect_clean(F&& body) {
  try {
    body();
  } catch (const secateur::Error&) {
  } catch (const std::exception& e) {
    finding(std::string("an exception other than secateur::Error escaped: ") + e.what());
  }
}

}  // namespace secateur::fuzz
