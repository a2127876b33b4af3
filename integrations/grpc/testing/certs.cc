#include "integrations/grpc/testing/certs.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"

namespace moecast::grpc_api::testing {
namespace {

absl::Status Run(const std::string& dir, const std::string& command) {
  const std::string log = absl::StrCat(dir, "/openssl.log");
  const std::string full =
      absl::StrCat("cd '", dir, "' && ", command, " >'", log, "' 2>&1");
  if (std::system(full.c_str()) != 0) {
    std::ifstream in(log);
    std::ostringstream out;
    out << in.rdbuf();
    return absl::InternalError(absl::StrCat("`", command, "` failed: ", out.str()));
  }
  return absl::OkStatus();
}

absl::StatusOr<std::string> Slurp(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::InternalError(absl::StrCat("cannot read ", path));
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

// A CA named `name` (name.pem, name.key).
std::string MakeCa(const std::string& name) {
  return absl::StrCat(
      "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ",
      "-keyout ", name, ".key -out ", name, ".pem -days 2 -subj /CN=", name);
}

// A leaf certificate `name` signed by `ca`, with extensions `ext`.
std::string MakeLeaf(const std::string& name, const std::string& ca,
                     const std::string& ext) {
  return absl::StrCat(
      "printf '", ext, "\\n' > ", name, ".ext && ",
      "openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes ",
      "-keyout ", name, ".key -out ", name, ".csr -subj /CN=", name, " && ",
      "openssl x509 -req -in ", name, ".csr -CA ", ca, ".pem -CAkey ", ca,
      ".key -CAcreateserial -out ", name, ".pem -days 2 -extfile ", name, ".ext");
}

}  // namespace

absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir) {
  for (const std::string& command :
       {MakeCa("ca"), MakeCa("rogue_ca"),
        MakeLeaf("server", "ca",
                 "subjectAltName=DNS:localhost,IP:127.0.0.1\\nextendedKeyUsage=serverAuth"),
        MakeLeaf("client", "ca", "extendedKeyUsage=clientAuth"),
        MakeLeaf("rogue_client", "rogue_ca", "extendedKeyUsage=clientAuth")}) {
    if (absl::Status s = Run(dir, command); !s.ok()) return s;
  }
  TestCerts certs;
  certs.dir = dir;
  struct Field {
    const char* file;
    std::string* out;
  };
  for (Field f : {Field{"ca.pem", &certs.ca_cert}, Field{"server.pem", &certs.server_cert},
                  Field{"server.key", &certs.server_key},
                  Field{"client.pem", &certs.client_cert},
                  Field{"client.key", &certs.client_key},
                  Field{"rogue_ca.pem", &certs.rogue_ca_cert},
                  Field{"rogue_client.pem", &certs.rogue_client_cert},
                  Field{"rogue_client.key", &certs.rogue_client_key}}) {
    absl::StatusOr<std::string> pem = Slurp(absl::StrCat(dir, "/", f.file));
    if (!pem.ok()) return pem.status();
    *f.out = *std::move(pem);
  }
  return certs;
}

}  // namespace moecast::grpc_api::testing
