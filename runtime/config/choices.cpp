#include "runtime/config/choices.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <map>

#include "runtime/core/check.h"
#include "runtime/model/spec.h"

namespace secateur::config {

namespace {

template <size_t N>
std::vector<std::string> names(const std::string_view (&list)[N]) {
  return {std::begin(list), std::end(list)};
}

const std::map<std::string, std::vector<std::string>>& table() {
  static const std::map<std::string, std::vector<std::string>> m = [] {
    const std::vector<std::string> proj = model::proj_names();
    return std::map<std::string, std::vector<std::string>>{
        {"model.dtype", names(choices::dtype)},
        {"model.device", names(choices::device)},
        {"convert.dtype", names(choices::export_dtype)},
        {"run.stages", names(choices::stages)},
        {"sparse.method", names(choices::sparse_method)},
        {"sparse.scope", names(choices::sparse_scope)},
        {"sparse.pattern", names(choices::sparse_pattern)},
        {"sparse.targets", proj},
        {"gum.method", names(choices::gum_method)},
        {"gum.ranking", names(choices::gum_ranking)},
        {"recover.method", names(choices::recover_method)},
        {"recover.schedule", names(choices::recover_schedule)},
        {"recover.lora_targets", proj},
        {"prune.criterion", names(choices::criterion)},
        {"prune.aggregate", names(choices::aggregate)},
        {"prune.scope", names(choices::prune_scope)},
        {"prune.attention", names(choices::prune_attention)},
        {"prune.compensation", names(choices::prune_compensation)},
        {"generate.sampling", names(choices::sampling)},
        {"logging.level", names(choices::log_level)},
    };
  }();
  return m;
}

}  // namespace

const std::vector<std::string>& choices_of(const std::string& key) {
  static const std::vector<std::string> none;
  const auto it = table().find(key);
  return it == table().end() ? none : it->second;
}

size_t choice_index(const std::string_view* list, size_t n, const std::string& key, const std::string& value) {
  for (size_t i = 0; i < n; ++i) {
    if (list[i] == value) return i;
  }
  std::vector<std::string_view> sorted(list, list + n);
  std::sort(sorted.begin(), sorted.end());
  SECATEUR_FAIL("[config] '{}' = '{}' is not allowed (allowed: {})", key, value, fmt::join(sorted, ", "));
}

}  // namespace secateur::config
