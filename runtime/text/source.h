// runtime/text/source.h — where text comes from: "austen:<novel>" (Debian r-cran-janeaustenr)
// or a path to a UTF-8 file.
#pragma once
#include <string>

namespace secateur::text {

std::string read_text(const std::string& spec, const std::string& austen_rdb);

}  // namespace secateur::text
