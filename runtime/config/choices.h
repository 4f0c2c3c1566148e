// runtime/config/choices.h — the config keys whose value is one of a fixed set of names, and the
// sets: written once here. The schema checks every value against them (Config::load), and each
// module parses its option with the same list (parse_choice), in the order of its enum where it
// has one (the module static_asserts the count). The projections come from where their names live,
// the model spec (model::proj_names). eval.tasks is open (any task directory): the eval stage checks it.
#pragma once
#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

namespace secateur::config {

namespace choices {
inline constexpr std::string_view dtype[] = {"float32", "bfloat16", "float16"};   // model.dtype
inline constexpr std::string_view export_dtype[] = {"auto", "float32", "bfloat16", "float16"};   // convert.dtype
inline constexpr std::string_view device[] = {"cpu", "cuda"};
inline constexpr std::string_view stages[] = {"convert", "eval", "prune", "gum", "sparse", "recover", "report",
                                              "generate", "score"};
// pruning::Criterion, pruning::Aggregate
inline constexpr std::string_view criterion[] = {"random", "l1", "l2", "taylor_element1", "taylor_element2",
                                                 "taylor_vector", "taylor_mixed", "activation", "wanda_sp", "flap",
                                                 "block_influence", "angular", "sleb"};
inline constexpr std::string_view aggregate[] = {"sum", "prod", "max", "last"};
inline constexpr std::string_view prune_scope[] = {"per_layer", "global", "uniform", "channel", "layer"};
inline constexpr std::string_view prune_attention[] = {"none", "kv_group", "query_head"};
inline constexpr std::string_view prune_compensation[] = {"none", "bias", "least_squares"};   // pruning::Compensation
inline constexpr std::string_view gum_method[] = {"random", "magnitude", "movement", "movement_soft", "gum"};  // GradualMethod
inline constexpr std::string_view gum_ranking[] = {"global", "local"};
inline constexpr std::string_view sparse_method[] = {"rpp", "imp", "wanda"};   // pruning::SparseMethod
inline constexpr std::string_view sparse_pattern[] = {"unstructured", "2:4"};
inline constexpr std::string_view sparse_scope[] = {"global", "per_layer", "per_tensor"};
inline constexpr std::string_view recover_method[] = {"lora", "full"};
inline constexpr std::string_view recover_schedule[] = {"cosine", "linear", "constant"};
inline constexpr std::string_view sampling[] = {"greedy", "top_p"};
inline constexpr std::string_view log_level[] = {"debug", "info", "warn", "error"};
}  // namespace choices

// The names a key's value must be one of; empty when the key takes any value.
const std::vector<std::string>& choices_of(const std::string& key);

// The index of `value` in names; otherwise Error "[config] 'key' = 'value' is not allowed
// (allowed: ...)", the allowed names sorted.
size_t choice_index(const std::string_view* names, size_t n, const std::string& key, const std::string& value);

template <size_t N>
size_t choice_index(const std::string_view (&names)[N], const std::string& key, const std::string& value) {
  return choice_index(names, N, key, value);
}
template <class Enum, size_t N>
Enum parse_choice(const std::string_view (&names)[N], const std::string& key, const std::string& value) {
  return static_cast<Enum>(choice_index(names, N, key, value));
}
template <size_t N>
void check_choice(const std::string_view (&names)[N], const std::string& key, const std::string& value) {
  choice_index(names, N, key, value);
}
template <class Enum, size_t N>
const char* choice_name(const std::string_view (&names)[N], Enum e) {
  return names[static_cast<size_t>(e)].data();   // the literals above end in a NUL
}

}  // namespace secateur::config
