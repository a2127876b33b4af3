"""moecast_fuzzer: a libFuzzer target plus a corpus replay test.

    moecast_fuzzer(name = "trace_reader", srcs = [...], deps = [...])

defines
  :trace_reader_fuzzer      with --config=fuzz (clang) a libFuzzer binary;
                            otherwise the same code with replay_main.cc
  :trace_reader_corpus_test runs the code once on every file in
                            corpus/trace_reader/ (seeds and regressions), in
                            the normal test suite and under --config=asan
"""

def moecast_fuzzer(name, srcs, deps = [], size = "small"):
    lib = name + "_fuzz_lib"
    corpus = native.glob(["corpus/" + name + "/**"])
    native.cc_library(
        name = lib,
        srcs = srcs,
        deps = deps + ["//fuzz:fuzz_util"],
        alwayslink = True,
        testonly = True,
    )
    native.cc_binary(
        name = name + "_fuzzer",
        deps = [":" + lib] + select({
            "//fuzz:fuzzing": [],
            "//conditions:default": ["//fuzz:replay_main"],
        }),
        linkopts = select({
            "//fuzz:fuzzing": ["-fsanitize=fuzzer"],
            "//conditions:default": [],
        }),
        testonly = True,
        tags = ["fuzzer"],
    )
    native.cc_test(
        name = name + "_corpus_test",
        size = size,
        deps = [":" + lib, "//fuzz:replay_main"],
        data = corpus,
        args = ["fuzz/corpus/" + name],
    )
