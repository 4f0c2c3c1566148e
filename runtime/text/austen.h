// runtime/text/austen.h — the six Jane Austen novels of Debian's r-cran-janeaustenr, read straight
// from the R lazy-load database (/usr/lib/R/site-library/janeaustenr/data/Rdata.rdb + Rdata.rdx):
// Secateur's calibration and perplexity text, with no R needed. The R serialisation subset that
// the database uses is parsed in rdata.cpp.
#pragma once
#include <string>
#include <vector>

namespace secateur::text {

// Object names in the package's order: emma, mansfieldpark, northangerabbey, persuasion,
// prideprejudice, sensesensibility. The index is the .rdx beside rdb_path.
std::vector<std::string> austen_names(const std::string& rdb_path);

// Text of a novel: its character vector's lines joined with '\n' (NA lines skipped, no final '\n').
// An unknown name -> Error listing the names.
std::string austen_novel(const std::string& rdb_path, const std::string& name);

}  // namespace secateur::text
