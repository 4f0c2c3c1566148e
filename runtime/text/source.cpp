#include "runtime/text/source.h"

#include <fstream>
#include <sstream>

#include "runtime/core/check.h"
#include "runtime/text/austen.h"

namespace secateur::text {

std::string read_text(const std::string& spec, const std::string& austen_rdb) {
  const std::string prefix = "austen:";
  if (spec.rfind(prefix, 0) == 0) return austen_novel(austen_rdb, spec.substr(prefix.size()));
  std::ifstream in(spec, std::ios::binary);
  SECATEUR_CHECK(in.good(), "[text] cannot open text file {}", spec);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace secateur::text
