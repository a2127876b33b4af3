// moecast's command-line subcommands, as functions so that tests can run them
// in-process. Each returns the process exit status (0 success, 1 bad input or
// failure, 2 usage error) and writes results to `out`, diagnostics to `err`.
//
// Thread-safety: each call is independent.
#ifndef MOECAST_INTEGRATIONS_CLI_COMMANDS_H_
#define MOECAST_INTEGRATIONS_CLI_COMMANDS_H_

#include <ostream>
#include <string>
#include <vector>

namespace moecast::cli {

// Dispatches `args` (argv without the program name): "replay", "bench",
// "plan", "simulate", "health", "client", "help", "version".
int RunCommand(const std::vector<std::string>& args, std::ostream& out,
               std::ostream& err);

// moecast replay --counts FILE [--router FILE] --top_k K ...
int RunReplay(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err);

// moecast bench --counts FILE --top_k K [--horizons ...] [--json OUT] ...
int RunBench(const std::vector<std::string>& args, std::ostream& out,
             std::ostream& err);

// moecast plan --loads FILE.json --slots S --gpus P [--groups G --nodes N] ...
int RunPlan(const std::vector<std::string>& args, std::ostream& out,
            std::ostream& err);

// moecast simulate --counts FILE --top_k K --slots S --gpus P --policy NAME ...
int RunSimulate(const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err);

// moecast health --counts FILE [--router FILE] --top_k K [--window W] ...
int RunHealth(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err);

// moecast client <verb> --server HOST:PORT [--token_file F] [--tls_ca F ...]:
// the moecast.v1 API of a running server. Verbs: register, ingest, jobs,
// info, forecast, state, health, placement, flush, delete, watch.
int RunClient(const std::vector<std::string>& args, std::ostream& out,
              std::ostream& err);

}  // namespace moecast::cli

#endif  // MOECAST_INTEGRATIONS_CLI_COMMANDS_H_
