#include "integrations/cli/flags.h"

#include <cmath>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace moecast::cli {

void FlagSet::AddString(std::string name, std::string* out, std::string help,
                        bool required) {
  flags_.push_back({std::move(name), Type::kString, out, std::move(help),
                    required});
}
void FlagSet::AddInt(std::string name, int64_t* out, std::string help,
                     bool required, int64_t min, int64_t max) {
  flags_.push_back({std::move(name), Type::kInt, out, std::move(help),
                    required, false, min, max});
}
void FlagSet::AddDouble(std::string name, double* out, std::string help,
                        bool required) {
  flags_.push_back({std::move(name), Type::kDouble, out, std::move(help),
                    required});
}
void FlagSet::AddBool(std::string name, bool* out, std::string help) {
  flags_.push_back({std::move(name), Type::kBool, out, std::move(help),
                    false});
}

FlagSet::Flag* FlagSet::Find(const std::string& name) {
  for (Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

bool FlagSet::IsSet(const std::string& name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return f.set;
  }
  return false;
}

absl::Status FlagSet::Assign(Flag* flag, const std::string& value) {
  const std::string where = absl::StrCat("moecast ", command_, ": --", flag->name);
  if (flag->set) {
    return absl::InvalidArgumentError(absl::StrCat(where, " is given twice"));
  }
  switch (flag->type) {
    case Type::kString:
      if (value.empty()) {
        return absl::InvalidArgumentError(absl::StrCat(where, " is empty"));
      }
      *static_cast<std::string*>(flag->out) = value;
      break;
    case Type::kInt: {
      int64_t v;
      if (!absl::SimpleAtoi(value, &v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "='", value, "' is not an integer"));
      }
      if (v < flag->min || v > flag->max) {
        return absl::InvalidArgumentError(absl::StrCat(
            where, "=", v, " must be in [", flag->min, ", ", flag->max, "]"));
      }
      *static_cast<int64_t*>(flag->out) = v;
      break;
    }
    case Type::kDouble: {
      double v;
      if (!absl::SimpleAtod(value, &v) || !std::isfinite(v)) {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "='", value, "' is not a finite number"));
      }
      *static_cast<double*>(flag->out) = v;
      break;
    }
    case Type::kBool: {
      const std::string v = absl::AsciiStrToLower(value);
      if (v == "true" || v == "1" || v == "yes") {
        *static_cast<bool*>(flag->out) = true;
      } else if (v == "false" || v == "0" || v == "no") {
        *static_cast<bool*>(flag->out) = false;
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(where, "='", value, "' is not true or false"));
      }
      break;
    }
  }
  flag->set = true;
  return absl::OkStatus();
}

absl::Status FlagSet::Parse(absl::Span<const std::string> args) {
  for (const std::string& arg : args) {
    if (arg == "--help" || arg == "-h" || arg == "-help") {
      help_requested_ = true;
      return absl::OkStatus();
    }
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      if (i + 1 < args.size()) {
        return absl::InvalidArgumentError(absl::StrCat(
            "moecast ", command_, ": unexpected argument '", args[i + 1], "'"));
      }
      break;
    }
    if (!absl::StartsWith(arg, "-") || arg == "-") {
      return absl::InvalidArgumentError(
          absl::StrCat("moecast ", command_, ": unexpected argument '", arg,
                       "' (flags are --name=value)"));
    }
    std::string body = arg.substr(absl::StartsWith(arg, "--") ? 2 : 1);
    std::string name = body;
    std::string value;
    bool has_value = false;
    if (size_t eq = body.find('='); eq != std::string::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    Flag* flag = Find(name);
    if (flag == nullptr && !has_value && absl::StartsWith(name, "no")) {
      Flag* negated = Find(name.substr(2));
      if (negated != nullptr && negated->type == Type::kBool) {
        absl::Status s = Assign(negated, "false");
        if (!s.ok()) return s;
        continue;
      }
    }
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("moecast ", command_, ": --", name,
                       " is not a flag of this command; its flags are:\n",
                       Usage()));
    }
    if (!has_value) {
      if (flag->type == Type::kBool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(absl::StrCat(
            "moecast ", command_, ": --", name, " needs a value"));
      }
    }
    if (absl::Status s = Assign(flag, value); !s.ok()) return s;
  }
  for (const Flag& f : flags_) {
    if (f.required && !f.set) {
      return absl::InvalidArgumentError(absl::StrCat(
          "moecast ", command_, ": --", f.name, " is required (", f.help, ")"));
    }
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  std::string out;
  for (const Flag& f : flags_) {
    std::string def;
    switch (f.type) {
      case Type::kString: {
        const std::string& v = *static_cast<const std::string*>(f.out);
        def = v.empty() ? "" : absl::StrCat(" (default ", v, ")");
        break;
      }
      case Type::kInt:
        def = absl::StrCat(" (default ", *static_cast<const int64_t*>(f.out), ")");
        break;
      case Type::kDouble:
        def = absl::StrCat(" (default ", *static_cast<const double*>(f.out), ")");
        break;
      case Type::kBool:
        def = *static_cast<const bool*>(f.out) ? " (default true)"
                                                : " (default false)";
        break;
    }
    absl::StrAppend(&out, "  --", f.name, f.required ? " (required)" : def,
                    "\n      ", f.help, "\n");
  }
  return out;
}

}  // namespace moecast::cli
