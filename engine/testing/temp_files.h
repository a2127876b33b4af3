// Temporary files for tests: paths under the test's temporary directory, and
// writers for plain and gzip content.
//
//   const std::string path = WriteFile("a.counts.csv", "step,layer,c0,c1\n...");
//
// Thread-safety: the functions write distinct files; use distinct names.
#ifndef MOECAST_ENGINE_TESTING_TEMP_FILES_H_
#define MOECAST_ENGINE_TESTING_TEMP_FILES_H_

#include <zlib.h>

#include <cstdio>
#include <string>

#include "gtest/gtest.h"

namespace moecast::testing {

// `name` under the test's temporary directory.
inline std::string TempPath(const std::string& name) {
  std::string dir = ::testing::TempDir();
  if (!dir.empty() && dir.back() != '/') dir += '/';
  return dir + name;
}

// Writes `content` to a fresh file and returns its path.
inline std::string WriteFile(const std::string& name, const std::string& content) {
  const std::string path = TempPath(name);
  std::FILE* f = std::fopen(path.c_str(), "wb");
  EXPECT_NE(f, nullptr) << path;
  if (f == nullptr) return path;
  EXPECT_EQ(std::fwrite(content.data(), 1, content.size(), f), content.size());
  EXPECT_EQ(std::fclose(f), 0);
  return path;
}

// Writes `content` gzip-compressed, whatever the name, and returns its path.
inline std::string WriteGzipFile(const std::string& name, const std::string& content) {
  const std::string path = TempPath(name);
  gzFile gz = gzopen(path.c_str(), "wb");
  EXPECT_NE(gz, nullptr) << path;
  if (gz == nullptr) return path;
  if (!content.empty()) {
    EXPECT_EQ(gzwrite(gz, content.data(), static_cast<unsigned>(content.size())),
              static_cast<int>(content.size()));
  }
  EXPECT_EQ(gzclose(gz), Z_OK);
  return path;
}

}  // namespace moecast::testing

#endif  // MOECAST_ENGINE_TESTING_TEMP_FILES_H_
