// The YAML config merged onto the schema with `key=value` overrides. The input is the config file,
// then a NUL byte, then one override per line. Every value is read back, and the resolved config
// dumped and loaded again must give the same dump.
#include <string>
#include <vector>

#include "runtime/config/config.h"
#include "tools/fuzz/fuzz.h"

using namespace secateur;

extern "C" int LLVMFuzzerInitialize(int*, char***) { return 0; }

namespace {

void read_all(const config::Config& c, const YAML::Node& n, const std::string& prefix) {
  if (n.IsMap()) {
    for (const auto& kv : n) read_all(c, kv.second, (prefix.empty() ? "" : prefix + ".") + kv.first.as<std::string>());
  } else if (n.IsSequence()) {
    (void)c.get<std::vector<std::string>>(prefix);
  } else {
    (void)c.get<std::string>(prefix);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string_view in = fuzz::text(data, size);
  const size_t nul = in.find('\0');
  const std::string_view yaml = in.substr(0, nul);
  std::vector<std::string> overrides;
  if (nul != std::string_view::npos) {
    std::string_view rest = in.substr(nul + 1);
    while (!rest.empty()) {
      const size_t nl = rest.find('\n');
      overrides.emplace_back(rest.substr(0, nl));
      rest = nl == std::string_view::npos ? std::string_view() : rest.substr(nl + 1);
    }
  }
  const std::string path = fuzz::write_input(reinterpret_cast<const uint8_t*>(yaml.data()), yaml.size(), "config.yaml");
  fuzz::expect_clean([&] {
    const config::Config c = config::Config::load(path, overrides);
    read_all(c, c.root(), "");
    const std::string dumped = c.dump();
    const std::string again = fuzz::write_input(reinterpret_cast<const uint8_t*>(dumped.data()), dumped.size(), "resolved.yaml");
    if (config::Config::load(again).dump() != dumped) fuzz::finding("the resolved config does not load back to itself");
  });
  return 0;
}
