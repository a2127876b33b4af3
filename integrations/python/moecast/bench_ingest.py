"""The in-process binding's cost per Ingest, next to the C++ call, in one run
(the console script `moecast-bench-ingest`).

    moecast-bench-ingest [--layers 58 --experts 256 --top-k 8 --steps 2000 --repeats 5]

Both sides ingest the same L x M float64 step into a fresh engine (analysis on
one engine thread, behind ingestion). By default the job has forecasting and
health off, so a call only validates and appends (the ingest path itself);
--analysis turns them on (the analysis thread then competes for the cores):

- C++: `steps` calls of moecast_ingest from C++ inside the extension module
  (the engine's ingest behind the C API, no Python), timed with
  std::chrono::steady_clock;
- Python: `steps` calls of moecast.engine.Engine.ingest with a C-contiguous
  float64 array (passed without a copy), timed with time.perf_counter_ns.

Prints the median over `repeats` of each side's mean ns per call and the
ratio; --json writes them. Exit status 2 on bad flags.
"""

import argparse
import json
import statistics
import sys
import time
from typing import List, Optional

import numpy as np

from . import _moecast_ext as _ext
from .engine import Engine


def _python_ns_per_call(layers: int, experts: int, top_k: int, steps: int,
                        analysis: bool) -> float:
    counts = (np.arange(layers * experts, dtype=np.float64).reshape(layers, experts)
              * 7919 % 97 + 1)
    with Engine(analysis_threads=1) as eng:
        eng.register_job("bench", layers, experts, top_k, forecasting=analysis, health=analysis)
        ingest = eng.ingest
        start = time.perf_counter_ns()
        for s in range(steps):
            ingest("bench", s, counts)
        end = time.perf_counter_ns()
    return (end - start) / steps


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="moecast-bench-ingest",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("--layers", type=int, default=58)
    p.add_argument("--experts", type=int, default=256)
    p.add_argument("--top-k", type=int, default=8)
    p.add_argument("--steps", type=int, default=2000, help="ingest calls per repeat")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--analysis", action="store_true",
                   help="register the job with forecasting and health on")
    p.add_argument("--json", default=None, help="also write the results to this file")
    args = p.parse_args(argv)
    if args.layers < 1 or args.experts < 2 or not 1 <= args.top_k <= args.experts:
        p.error("need --layers >= 1, --experts >= 2 and 1 <= --top-k <= --experts")
    if args.steps < 1 or args.repeats < 1:
        p.error("--steps and --repeats must be >= 1")
    cpp: List[float] = []
    py: List[float] = []
    for _ in range(args.repeats):
        cpp.append(_ext._time_c_ingest(args.layers, args.experts, args.top_k, args.steps,
                                       args.analysis))
        py.append(_python_ns_per_call(args.layers, args.experts, args.top_k, args.steps,
                                      args.analysis))
    result = {
        "layers": args.layers, "experts": args.experts, "top_k": args.top_k,
        "steps": args.steps, "repeats": args.repeats, "analysis": args.analysis,
        "cpp_ns_per_ingest": statistics.median(cpp),
        "python_ns_per_ingest": statistics.median(py),
    }
    result["python_over_cpp"] = result["python_ns_per_ingest"] / result["cpp_ns_per_ingest"]
    result["binding_overhead_ns"] = result["python_ns_per_ingest"] - result["cpp_ns_per_ingest"]
    print("%d x %d ingest (analysis %s), %d calls x %d repeats (median of the per-repeat means):"
          % (args.layers, args.experts, "on" if args.analysis else "off", args.steps,
             args.repeats))
    print("  C++ (moecast_ingest)      %10.0f ns/call" % result["cpp_ns_per_ingest"])
    print("  Python (Engine.ingest)    %10.0f ns/call" % result["python_ns_per_ingest"])
    print("  ratio %.2fx, binding overhead %.0f ns/call"
          % (result["python_over_cpp"], result["binding_overhead_ns"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
