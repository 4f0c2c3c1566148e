#include "runtime/config/config.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <sstream>

#include "runtime/config/choices.h"
#include "runtime/config/default_yaml.h"   // generated: kDefaultYaml
#include "runtime/core/check.h"
#include "runtime/io/atomic_file.h"

namespace secateur::config {

namespace {

enum class Kind { integer, number, boolean, string };

Kind kind_of(const YAML::Node& scalar) {
  const std::string& s = scalar.Scalar();
  if (scalar.Tag() == "!") return Kind::string;     // quoted in the defaults
  long long i;
  double d;
  bool b;
  if (YAML::convert<long long>::decode(scalar, i)) return Kind::integer;
  if (YAML::convert<double>::decode(scalar, d)) return Kind::number;
  if (YAML::convert<bool>::decode(scalar, b)) return Kind::boolean;
  (void)s;
  return Kind::string;
}

const char* kind_name(Kind k) {
  switch (k) {
    case Kind::integer: return "an integer";
    case Kind::number: return "a number";
    case Kind::boolean: return "true or false";
    default: return "a string";
  }
}

void check_scalar(const std::string& key, const YAML::Node& value, const YAML::Node& schema, const std::string& src) {
  SECATEUR_CHECK(value.IsScalar(), "[config] {}: '{}' must be a single value", src, key);
  // yaml-cpp keeps a lone carriage return inside a plain scalar and writes it back unquoted, so the
  // resolved config would not read back to itself; no value needs one.
  SECATEUR_CHECK(value.Scalar().find('\r') == std::string::npos,
                 "[config] {}: '{}' (line {}) contains a carriage return", src, key, value.Mark().line + 1);
  const Kind want = kind_of(schema);
  const Kind got = kind_of(value);
  const bool ok = want == got || want == Kind::string || (want == Kind::number && got == Kind::integer);
  SECATEUR_CHECK(ok, "[config] {}: '{}' must be {}, got '{}'", src, key, kind_name(want), value.Scalar());
  const std::vector<std::string>& allowed = choices_of(key);
  if (allowed.empty() || std::find(allowed.begin(), allowed.end(), value.Scalar()) != allowed.end()) return;
  std::vector<std::string> sorted = allowed;
  std::sort(sorted.begin(), sorted.end());
  SECATEUR_FAIL("[config] {}: '{}' = '{}' is not allowed (allowed: {})", src, key, value.Scalar(), fmt::join(sorted, ", "));
}

// Checks `user` against `schema` (the defaults) and writes the merged result into `out`.
void merge(const YAML::Node& schema, const YAML::Node& user, YAML::Node out, const std::string& prefix,
           const std::string& src) {
  SECATEUR_CHECK(user.IsMap(), "[config] {}: '{}' must be a mapping", src, prefix.empty() ? "<top>" : prefix);
  for (const auto& kv : user) {
    SECATEUR_CHECK(kv.first.IsScalar(), "[config] {}: a key under '{}' at line {} is not a plain name", src,
                   prefix.empty() ? "<top>" : prefix, kv.first.Mark().line + 1);
    const std::string name = kv.first.Scalar();
    const std::string key = prefix.empty() ? name : prefix + "." + name;
    const YAML::Node s = schema[name];
    if (!s) {
      std::string keys;
      for (const auto& sk : schema) keys += (keys.empty() ? "" : ", ") + sk.first.as<std::string>();
      SECATEUR_FAIL("[config] {}: unknown key '{}' (allowed here: {})", src, key, keys);
    }
    const YAML::Node& v = kv.second;
    if (s.IsMap()) {
      merge(s, v, out[name], key, src);
    } else if (s.IsSequence()) {
      SECATEUR_CHECK(v.IsSequence(), "[config] {}: '{}' must be a list", src, key);
      for (const auto& item : v) check_scalar(key, item, s.size() ? s[0] : YAML::Node(""), src);
      out[name] = YAML::Clone(v);
    } else {
      check_scalar(key, v, s, src);
      out[name] = YAML::Clone(v);
    }
  }
}

YAML::Node parse(const std::string& text, const std::string& src) {
  try {
    YAML::Node n = YAML::Load(text);
    return n.IsNull() ? YAML::Node(YAML::NodeType::Map) : n;
  } catch (const YAML::Exception& e) {
    SECATEUR_FAIL("[config] {}: malformed YAML at line {}, column {}: {}", src, e.mark.line + 1, e.mark.column + 1,
                  e.msg);
  }
}

YAML::Node walk(const YAML::Node& root, const std::string& dotted) {
  YAML::Node n;
  n.reset(root);                      // Node::operator= would write through; reset() rebinds
  std::stringstream ss(dotted);
  std::string part;
  while (std::getline(ss, part, '.')) {
    SECATEUR_CHECK(n.IsMap() && n[part], "[config] no key '{}'", dotted);
    n.reset(n[part]);
  }
  return n;
}

}  // namespace

const std::string& Config::default_yaml() {
  static const std::string s(kDefaultYaml);
  return s;
}

Config Config::load(const std::string& path, const std::vector<std::string>& overrides) {
  Config c;
  static const YAML::Node schema = parse(default_yaml(), "configs/default.yaml");   // read only from here on
  c.root_ = YAML::Clone(schema);
  c.source_ = path.empty() ? "<embedded default>" : path;
  if (!path.empty()) {
    YAML::Node user;
    try {
      user = YAML::LoadFile(path);
    } catch (const YAML::BadFile&) {
      SECATEUR_FAIL("[config] cannot read {}", path);
    } catch (const YAML::Exception& e) {
      SECATEUR_FAIL("[config] {}: malformed YAML at line {}, column {}: {}", path, e.mark.line + 1,
                    e.mark.column + 1, e.msg);
    }
    if (!user.IsNull()) merge(schema, user, c.root_, "", path);
  }
  for (const std::string& o : overrides) {
    const auto eq = o.find('=');
    SECATEUR_CHECK(eq != std::string::npos && eq > 0, "[config] override '{}' is not key.sub=value", o);
    const std::string key = o.substr(0, eq);
    // Build {a: {b: value}} and merge it like a tiny user config.
    YAML::Node value = parse(o.substr(eq + 1), "override " + key);
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    YAML::Node doc(YAML::NodeType::Map);
    YAML::Node cur;
    cur.reset(doc);
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
      cur.reset(cur[parts[i]]);
    }
    cur[parts.back()] = value;
    merge(schema, doc, c.root_, "", "override " + key);
  }
  return c;
}

template <typename T>
T Config::get(const std::string& dotted) const {
  const YAML::Node n = walk(root_, dotted);
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    SECATEUR_FAIL("[config] '{}' has the wrong type", dotted);
  }
}

template int64_t Config::get<int64_t>(const std::string&) const;
template double Config::get<double>(const std::string&) const;
template bool Config::get<bool>(const std::string&) const;
template std::string Config::get<std::string>(const std::string&) const;
template std::vector<int64_t> Config::get<std::vector<int64_t>>(const std::string&) const;
template std::vector<std::string> Config::get<std::vector<std::string>>(const std::string&) const;

std::string Config::dump() const {
  YAML::Emitter e;
  e << root_;
  return std::string(e.c_str()) + "\n";
}

void Config::write(const std::string& path) const { io::write_file_atomic(path, dump()); }

}  // namespace secateur::config
