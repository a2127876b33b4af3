// Test certificates made with the openssl command line: a CA, a server
// certificate for 127.0.0.1 / localhost signed by it, a client certificate
// signed by it, and a client certificate from an unrelated CA.
//
//   MOECAST_ASSIGN_OR_RETURN(TestCerts certs, MakeTestCerts(dir));
//   options.tls.cert_chain_pem = certs.server_cert;
//
// Thread-safety: writes files under `dir`; use distinct directories.
#ifndef MOECAST_INTEGRATIONS_GRPC_TESTING_CERTS_H_
#define MOECAST_INTEGRATIONS_GRPC_TESTING_CERTS_H_

#include <string>

#include "absl/status/statusor.h"

namespace moecast::grpc_api::testing {

struct TestCerts {
  std::string dir;  // where the PEM files are (ca.pem, server.pem, ...)
  std::string ca_cert;
  std::string server_cert, server_key;
  std::string client_cert, client_key;
  std::string rogue_ca_cert;  // an unrelated CA
  std::string rogue_client_cert, rogue_client_key;  // signed by rogue_ca
};

// Runs openssl (EC P-256 keys, valid for two days) in `dir`. INTERNAL with
// openssl's output when a command fails.
absl::StatusOr<TestCerts> MakeTestCerts(const std::string& dir);

}  // namespace moecast::grpc_api::testing

#endif  // MOECAST_INTEGRATIONS_GRPC_TESTING_CERTS_H_
