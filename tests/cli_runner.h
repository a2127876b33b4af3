// Runs `moecast` subcommands in-process for tests and captures their output.
//
//   CommandRun r = Moecast({"replay", "--counts", path, "--top_k=2"});
//   EXPECT_EQ(r.code, 0) << r.err;
//
// Thread-safety: each call is independent.
#ifndef MOECAST_TESTS_CLI_RUNNER_H_
#define MOECAST_TESTS_CLI_RUNNER_H_

#include <sstream>
#include <string>
#include <vector>

#include "integrations/cli/commands.h"

namespace moecast::testing {

struct CommandRun {
  int code;         // the exit status
  std::string out;  // what the command wrote to stdout
  std::string err;  // and to stderr
};

inline CommandRun Moecast(const std::vector<std::string>& args) {
  std::ostringstream out, err;
  const int code = cli::RunCommand(args, out, err);
  return {code, out.str(), err.str()};
}

}  // namespace moecast::testing

#endif  // MOECAST_TESTS_CLI_RUNNER_H_
