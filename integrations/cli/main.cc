// The moecast command-line tool. See `moecast help`.
#include <iostream>
#include <string>
#include <vector>

#include "integrations/cli/commands.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  return moecast::cli::RunCommand(args, std::cout, std::cerr);
}
