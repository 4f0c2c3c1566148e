// runtime/config/config.h — YAML configuration with a schema: configs/default.yaml,
// compiled into the binary, is both the defaults and the list of allowed keys and types.
// A user config and `key.sub=value` overrides are merged onto it and validated; every
// error names the key (and the allowed values where there is a fixed set).
#pragma once
#include <yaml-cpp/yaml.h>

#include <string>
#include <vector>

namespace secateur::config {

class Config {
 public:
  // path "" = defaults only. Overrides are "a.b=value" (value parsed as YAML).
  static Config load(const std::string& path, const std::vector<std::string>& overrides = {});
  static const std::string& default_yaml();

  template <typename T>
  T get(const std::string& dotted) const;
  const YAML::Node& root() const { return root_; }
  std::string source() const { return source_; }
  std::string dump() const;                         // the resolved config as YAML
  void write(const std::string& path) const;        // atomically

 private:
  YAML::Node root_;
  std::string source_;
};

}  // namespace secateur::config
