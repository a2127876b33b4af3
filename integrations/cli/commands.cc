#include "integrations/cli/commands.h"

#include "absl/strings/str_cat.h"

namespace moecast::cli {
namespace {

constexpr char kVersion[] = "0.1.0";

void PrintUsage(std::ostream& os) {
  os << "moecast " << kVersion
     << ": load forecasting for Mixture-of-Experts schedulers\n\n"
        "usage: moecast <command> [flags]\n\n"
        "commands:\n"
        "  replay    feed a trace through the engine and summarise it\n"
        "  bench     compare predictors on a trace (errors by horizon and "
        "state, noise floors, JSON)\n"
        "  plan      plan an expert placement (eplb or default mode) for "
        "given loads\n"
        "  simulate  replay a trace against placement policies (periodic, "
        "oracle, moecast)\n"
        "  health    gamma_eff with CIs and phases, dead experts, imbalance per "
        "window\n"
        "  client    talk to a moecastd server: register, ingest, forecast, "
        "placement,\n"
        "            health, state, info, jobs, flush, delete, watch (moecast "
        "client --help)\n"
        "  help      show this text, or a command's flags (moecast help "
        "replay)\n"
        "  version   print the version\n";
}

}  // namespace

int RunCommand(const std::vector<std::string>& args, std::ostream& out,
               std::ostream& err) {
  if (args.empty()) {
    PrintUsage(err);
    return 2;
  }
  const std::string& command = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (command == "replay") return RunReplay(rest, out, err);
  if (command == "bench") return RunBench(rest, out, err);
  if (command == "plan") return RunPlan(rest, out, err);
  if (command == "simulate") return RunSimulate(rest, out, err);
  if (command == "health") return RunHealth(rest, out, err);
  if (command == "client") return RunClient(rest, out, err);
  if (command == "version" || command == "--version") {
    out << "moecast " << kVersion << "\n";
    return 0;
  }
  if (command == "help" || command == "--help" || command == "-h") {
    if (!rest.empty()) return RunCommand({rest[0], "--help"}, out, err);
    PrintUsage(out);
    return 0;
  }
  err << "moecast: unknown command '" << command << "'\n\n";
  PrintUsage(err);
  return 2;
}

}  // namespace moecast::cli
