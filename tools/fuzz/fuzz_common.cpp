#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "tools/fuzz/fuzz.h"

namespace secateur::fuzz {

namespace fs = std::filesystem;

std::string scratch_dir() {
  // Never destroyed: the exit handler that removes it runs after the statics are gone.
  static const std::string& dir = *new std::string([] {
    std::error_code ec;
    const char* env = std::getenv("SECATEUR_FUZZ_TMP");
    const fs::path base = env ? fs::path(env) : fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm")
                                                                                 : fs::temp_directory_path();
    const fs::path d = base / ("secateur-fuzz-" + std::to_string(::getpid()));
    fs::create_directories(d);
    std::atexit([] {
      std::error_code ignored;
      fs::remove_all(scratch_dir(), ignored);
    });
    return d.string();
  }());
  return dir;
}

std::string write_input(const uint8_t* data, size_t size, const std::string& name) {
  const std::string path = (fs::path(scratch_dir()) / name).string();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(size));
  out.close();
  if (!out) finding("cannot write the input to " + path);
  return path;
}

}  // namespace secateur::fuzz
