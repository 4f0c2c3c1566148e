// runtime/core/check.h — the one error type and check macro of Secateur.
// Library code throws secateur::Error with a message that names where and what
// ("[io/gguf] model.gguf: tensor 'x' offset 123 past end of file (size 100)");
// the executable turns it into one line on stderr and a non-zero exit.
#pragma once
#include <fmt/format.h>
#include <stdexcept>
#include <string>

namespace secateur {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace secateur

#define SECATEUR_CHECK(cond, ...)                                  \
  do {                                                             \
    if (!(cond)) throw ::secateur::Error(fmt::format(__VA_ARGS__)); \
  } while (0)

#define SECATEUR_FAIL(...) throw ::secateur::Error(fmt::format(__VA_ARGS__))
