// moecastd: the moecast gRPC server.
//
//   moecastd [--listen ADDR] [--max_message_bytes N]
//
// --listen defaults to 127.0.0.1:50051 (port 0 picks a free port; the bound
// address is printed). SIGTERM or SIGINT stop accepting calls, let in-flight
// ones finish (5 s grace), and exit 0.
#include <pthread.h>
#include <signal.h>

#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/strings/numbers.h"
#include "engine/engine.h"
#include "integrations/grpc/server.h"

namespace {

void Usage(const char* argv0) {
  std::fprintf(stderr,
               "usage: %s [--listen ADDR] [--max_message_bytes N]\n"
               "  --listen ADDR            host:port (default 127.0.0.1:50051)\n"
               "  --max_message_bytes N    largest gRPC message (default 67108864)\n",
               argv0);
}

// Parses "--name value" or "--name=value". Returns false on a bad argument.
bool ParseFlags(int argc, char** argv, moecast::grpc_api::ServerOptions* options) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    std::string name = arg, value;
    bool has_value = false;
    if (size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      has_value = true;
    }
    if (name == "--help" || name == "-h") return false;
    if (name != "--listen" && name != "--max_message_bytes") {
      std::fprintf(stderr, "unknown flag '%s'\n", arg.c_str());
      return false;
    }
    if (!has_value) {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "flag '%s' needs a value\n", name.c_str());
        return false;
      }
      value = argv[++i];
    }
    if (name == "--listen") {
      options->listen = value;
    } else {
      int n = 0;
      if (!absl::SimpleAtoi(value, &n) || n <= 0) {
        std::fprintf(stderr, "--max_message_bytes: not a positive int: '%s'\n",
                     value.c_str());
        return false;
      }
      options->max_message_bytes = n;
    }
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  moecast::grpc_api::ServerOptions options;
  if (!ParseFlags(argc, argv, &options)) {
    Usage(argv[0]);
    return 2;
  }
  // Block the stop signals in every thread (gRPC's included); main waits for
  // them with sigwait.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);

  absl::StatusOr<std::unique_ptr<moecast::Engine>> engine =
      moecast::Engine::Create(moecast::EngineOptions());
  if (!engine.ok()) {
    std::fprintf(stderr, "moecastd: %s\n", engine.status().ToString().c_str());
    return 1;
  }
  absl::StatusOr<std::unique_ptr<moecast::grpc_api::MoecastServer>> server =
      moecast::grpc_api::MoecastServer::Start(engine->get(), options);
  if (!server.ok()) {
    std::fprintf(stderr, "moecastd: %s\n", server.status().ToString().c_str());
    return 1;
  }
  std::printf("moecastd: listening on %s (port %d)\n", options.listen.c_str(),
              (*server)->port());
  std::fflush(stdout);

  // Commits timed-out multi-source steps of every job once a second.
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread poller([&] {
    std::unique_lock<std::mutex> lock(mu);
    while (!cv.wait_for(lock, std::chrono::seconds(1), [&] { return stop; })) {
      (*engine)->Poll();
    }
  });

  int sig = 0;
  sigwait(&stop_signals, &sig);
  std::printf("moecastd: signal %d, shutting down\n", sig);
  std::fflush(stdout);
  (*server)->Shutdown();
  (*server)->Wait();
  {
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
  }
  cv.notify_all();
  poller.join();
  server->reset();
  std::printf("moecastd: stopped\n");
  return 0;
}
