// The .npz reader: round trips through the project's writer, files written by NumPy itself
// (numpy.savez and numpy.savez_compressed, through Debian's python3-numpy), and every kind of
// malformed file failing with a message that names it.
#include "worker/data/npz.h"

#include <cstdlib>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/files.h"

namespace regtopk {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/npz_test_", getpid(), "_", name);
}

std::map<std::string, NpyArray> SmallSet() {
  return {{"x", MakeFloat32Array({3, 2, 2}, {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})},
          {"y", MakeInt64Array({3}, {2, 0, 1})}};
}

TEST(Npz, RoundTripsThroughTheWriter) {
  const std::string path = TempPath("small.npz");
  ASSERT_TRUE(WriteNpz(path, SmallSet()).ok());
  auto d = LoadNpzDataset(path);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_EQ(d->num_examples, 3u);
  EXPECT_THAT(d->example_shape, ElementsAre(2, 2));
  EXPECT_EQ(d->num_classes, 3);
  EXPECT_THAT(d->labels, ElementsAre(2, 0, 1));
  EXPECT_EQ(d->features[11], 11.0f);
}

TEST(Npz, RegressionTargetsKeepTheirShape) {
  const std::string path = TempPath("regression.npz");
  ASSERT_TRUE(WriteNpz(path, {{"x", MakeFloat32Array({2, 3}, {1, 2, 3, 4, 5, 6})},
                              {"y", MakeFloat32Array({2, 2}, {0.5f, 1, 1.5f, 2})}})
                  .ok());
  auto d = LoadNpzDataset(path);
  ASSERT_TRUE(d.ok()) << d.status();
  EXPECT_TRUE(d->is_regression());
  EXPECT_THAT(d->target_shape, ElementsAre(2));
  EXPECT_THAT(d->targets, ElementsAre(0.5f, 1, 1.5f, 2));
}

// numpy.savez (stored, zip64 local headers) and numpy.savez_compressed (deflate) as NumPy
// itself writes them.
TEST(Npz, ReadsWhatNumpyWrites) {
  for (const char* fn : {"savez", "savez_compressed"}) {
    const std::string path = TempPath(absl::StrCat(fn, ".npz"));
    const std::string cmd = absl::StrCat(
        "/usr/bin/python3 -c \"import numpy as np; x = np.arange(6000, dtype=np.float32)"
        ".reshape(1000, 2, 3); y = (np.arange(1000) % 7).astype(np.int64); np.", fn, "('", path,
        "', x=x, y=y)\"");
    ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
    auto d = LoadNpzDataset(path);
    ASSERT_TRUE(d.ok()) << fn << ": " << d.status();
    EXPECT_EQ(d->num_examples, 1000u);
    EXPECT_THAT(d->example_shape, ElementsAre(2, 3));
    EXPECT_EQ(d->num_classes, 7);
    EXPECT_EQ(d->features[5999], 5999.0f);
    EXPECT_EQ(d->labels[999], 999 % 7);
  }
}

TEST(Npz, NumpyReadsWhatTheWriterWrites) {
  const std::string path = TempPath("for_numpy.npz");
  ASSERT_TRUE(WriteNpz(path, SmallSet()).ok());
  const std::string cmd = absl::StrCat(
      "/usr/bin/python3 -c \"import numpy as np; d = np.load('", path,
      "'); assert d['x'].shape == (3, 2, 2) and d['x'][2, 1, 1] == 11 and "
      "list(d['y']) == [2, 0, 1]\"");
  EXPECT_EQ(std::system(cmd.c_str()), 0);
}

void ExpectError(const std::string& path, const std::string& what) {
  auto d = LoadNpzDataset(path);
  ASSERT_FALSE(d.ok());
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(path));
  EXPECT_THAT(std::string(d.status().message()), HasSubstr(what));
}

TEST(Npz, MalformedFilesFailNamingTheFileAndTheProblem) {
  const std::string good = TempPath("good.npz");
  ASSERT_TRUE(WriteNpz(good, SmallSet()).ok());
  const std::string bytes = Slurp(good);
  auto write = [](const std::string& path, const std::string& b) {
    std::ofstream(path, std::ios::binary) << b;
    return path;
  };
  EXPECT_EQ(LoadNpzDataset(TempPath("missing.npz")).status().code(), absl::StatusCode::kNotFound);
  ExpectError(write(TempPath("text.npz"), "just some text, not a zip"), "not a readable .npz");
  ExpectError(write(TempPath("truncated.npz"), bytes.substr(0, bytes.size() / 2)),
              "not a readable .npz");
  std::string flipped = bytes;
  flipped[200] ^= 0x40;  // inside x's data
  ExpectError(write(TempPath("flipped.npz"), flipped), "CRC mismatch");

  auto set = SmallSet();
  set.erase("y");
  ASSERT_TRUE(WriteNpz(TempPath("no_y.npz"), set).ok());
  ExpectError(TempPath("no_y.npz"), "has no array 'y'");

  set = SmallSet();
  set["x"].descr = "<f8";
  set["x"].data += set["x"].data;
  ASSERT_TRUE(WriteNpz(TempPath("f8.npz"), set).ok());
  ExpectError(TempPath("f8.npz"), "astype(numpy.float32)");

  set = SmallSet();
  set["y"] = MakeInt64Array({2}, {0, 1});
  ASSERT_TRUE(WriteNpz(TempPath("counts.npz"), set).ok());
  ExpectError(TempPath("counts.npz"), "same number");

  set = SmallSet();
  set["y"] = MakeInt64Array({3}, {0, -1, 1});
  ASSERT_TRUE(WriteNpz(TempPath("negative.npz"), set).ok());
  ExpectError(TempPath("negative.npz"), "not a class index");

  set = SmallSet();
  set["x"].data.resize(set["x"].data.size() - 4);  // the header says 12 floats
  ASSERT_TRUE(WriteNpz(TempPath("short.npz"), set).ok());
  ExpectError(TempPath("short.npz"), "needs 48");

  set = SmallSet();
  set["x"].data.replace(0, 4, std::string("\x00\x00\xc0\x7f", 4));  // NaN
  ASSERT_TRUE(WriteNpz(TempPath("nan.npz"), set).ok());
  ExpectError(TempPath("nan.npz"), "non-finite");
}

TEST(Npy, HeaderErrorsAreNamed) {
  EXPECT_THAT(std::string(ParseNpy("garbage!!!!!", "a.npy").status().message()),
              HasSubstr("a.npy: not a .npy array"));
  std::string fortran = std::string("\x93NUMPY\x01\x00", 8);
  const std::string h = "{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }\n";
  fortran.push_back(static_cast<char>(h.size()));
  fortran.push_back(0);
  fortran += h + std::string(4, '\0');
  EXPECT_THAT(std::string(ParseNpy(fortran, "f.npy").status().message()),
              HasSubstr("Fortran-ordered"));
}

}  // namespace
}  // namespace regtopk
