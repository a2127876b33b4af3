// A small typed flag parser for moecast's subcommands.
//
// Each subcommand declares its own flags, so `moecast replay --slots 3` says
// "--slots is not a flag of 'moecast replay'" instead of silently accepting
// a flag that belongs to another command.
//
//   FlagSet flags("replay");
//   std::string counts;
//   int64_t top_k = 0;
//   flags.AddString("counts", &counts, "counts CSV (.gz ok)", /*required=*/true);
//   flags.AddInt("top_k", &top_k, "experts per token", /*required=*/true);
//   MOECAST_RETURN_IF_ERROR(flags.Parse(args));
//
// Accepted forms: --name=value, --name value, and for booleans --name,
// --name=true|false and --noname. "--" ends the flags.
//
// Thread-safety: not thread-safe.
#ifndef MOECAST_INTEGRATIONS_CLI_FLAGS_H_
#define MOECAST_INTEGRATIONS_CLI_FLAGS_H_

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/types/span.h"

namespace moecast::cli {

class FlagSet {
 public:
  explicit FlagSet(std::string command) : command_(std::move(command)) {}

  void AddString(std::string name, std::string* out, std::string help,
                 bool required = false);
  // Integers outside [min, max] are rejected with the range in the message.
  void AddInt(std::string name, int64_t* out, std::string help,
              bool required = false,
              int64_t min = std::numeric_limits<int64_t>::min(),
              int64_t max = std::numeric_limits<int64_t>::max());
  void AddDouble(std::string name, double* out, std::string help,
                 bool required = false);
  void AddBool(std::string name, bool* out, std::string help);

  // Parses `args` (the words after the subcommand). Returns INVALID_ARGUMENT
  // naming the flag for an unknown flag, a missing or malformed value, a
  // repeated flag, a missing required flag, or a stray positional argument.
  absl::Status Parse(absl::Span<const std::string> args);

  // Whether the flag was given on the command line.
  bool IsSet(const std::string& name) const;

  // True when the words held --help or -h: Parse then returns OK without
  // checking required flags, and the command prints Usage() and exits 0.
  bool help_requested() const { return help_requested_; }

  // One line per flag: name, type, default, help.
  std::string Usage() const;

 private:
  enum class Type { kString, kInt, kDouble, kBool };
  struct Flag {
    std::string name;
    Type type;
    void* out;
    std::string help;
    bool required;
    bool set = false;
    int64_t min = std::numeric_limits<int64_t>::min();  // kInt only
    int64_t max = std::numeric_limits<int64_t>::max();
  };
  Flag* Find(const std::string& name);
  absl::Status Assign(Flag* flag, const std::string& value);

  std::string command_;
  std::vector<Flag> flags_;
  bool help_requested_ = false;
};

}  // namespace moecast::cli

#endif  // MOECAST_INTEGRATIONS_CLI_FLAGS_H_
