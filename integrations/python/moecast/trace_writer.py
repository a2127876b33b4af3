"""Writes traces in the moecast trace format (docs/design.md section 7,
bench/traces/README.md "File format as written here"), byte for byte the way
bench/traces/train_moe.py writes them:

    NAME.counts.csv.gz  header step,layer,tokens,c0,...,c{M-1}; one row per
                        (step, layer); counts printed as integers.
    NAME.router.csv.gz  header step,layer,z0..z{M-1},p0..p{M-1},s0..s{M-1};
                        floats printed with fmt ("%.5g"), same rows.
    NAME.meta.json      optional sidecar (documentation only).

gzip files get a fixed header (mtime 0, the file name without ".gz"), so the
same rows give the same bytes; files are written to NAME...part and renamed
when close() succeeds. No numpy or torch needed (rows are sequences).
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

ROUTER_BLOCKS: tuple[str, ...] = ("z", "p", "s")


def gz_text_writer(path: str, level: int) -> io.TextIOWrapper:
    """A text writer to PATH.part (gzip with a fixed header when PATH ends in .gz).
    Raises OSError when PATH.part cannot be created."""
    raw = open(path + ".part", "wb")
    if not path.endswith(".gz"):
        w = io.TextIOWrapper(raw, encoding="ascii", newline="\n")
        w._raw_file = None  # type: ignore[attr-defined]
        return w
    gz = gzip.GzipFile(filename=os.path.basename(path)[:-3], mode="wb", compresslevel=level,
                       fileobj=raw, mtime=0)
    w = io.TextIOWrapper(gz, encoding="ascii", newline="\n")  # type: ignore[arg-type]
    w._raw_file = raw  # type: ignore[attr-defined]  # GzipFile does not close a fileobj it was given
    return w


def _close(w: Any) -> None:
    w.close()
    if w._raw_file is not None:
        w._raw_file.close()


class TraceWriter:
    """Streams steps into NAME.counts.csv[.gz] (and NAME.router.csv[.gz]).

        w = TraceWriter("out/run1", num_layers=4, num_experts=16, router=True)
        w.write(step, counts, tokens, router_rows)   # counts [L][M]; router [L][3M] (z, p, s)
        w.close(meta={...})                          # renames the .part files

    prefix: path prefix NAME (directories are created). router: write the
    router file (each write() must then pass router rows of len(blocks)*M
    values: z, then p, then s). compress: gzip (".csv.gz") or plain ".csv".

    The constructor raises ValueError for router blocks that do not start
    with "z" or are not among z, p, s, and OSError when the directory or a
    .part file cannot be created.
    """

    router_path: str | None
    first_step: int | None
    last_step: int | None

    def __init__(self, prefix: str | os.PathLike[str], num_layers: int, num_experts: int,
                 router: bool = True, blocks: Iterable[str] = ROUTER_BLOCKS,
                 compress: bool = True, level: int = 9, fmt: str = "%.5g") -> None:
        self.prefix = os.fspath(prefix)
        self.num_layers = int(num_layers)
        self.num_experts = int(num_experts)
        self.blocks = tuple(blocks) if router else ()
        if router and (not self.blocks or any(b not in ROUTER_BLOCKS for b in self.blocks)
                       or self.blocks[0] != "z"):
            raise ValueError("router blocks must start with 'z' and be among z, p, s; got %r"
                             % (blocks,))
        self.fmt = fmt
        suffix = ".csv.gz" if compress else ".csv"
        self.counts_path = self.prefix + ".counts" + suffix
        self.router_path = self.prefix + ".router" + suffix if router else None
        self.meta_path = self.prefix + ".meta.json"
        self.steps = 0
        self.first_step = None
        self.last_step = None
        d = os.path.dirname(self.prefix)
        if d:
            os.makedirs(d, exist_ok=True)
        M = self.num_experts
        self._cf = gz_text_writer(self.counts_path, level)
        self._cf.write(",".join(["step", "layer", "tokens"] + ["c%d" % e for e in range(M)]) + "\n")
        self._rf: io.TextIOWrapper | None = None
        if self.router_path:
            self._rf = gz_text_writer(self.router_path, level)
            names = ["step", "layer"]
            for b in self.blocks:
                names += ["%s%d" % (b, e) for e in range(M)]
            self._rf.write(",".join(names) + "\n")
        self.closed = False

    def write(self, step: int, counts: Sequence[Sequence[float]], tokens: float,
              router: Sequence[Sequence[float]] | None = None) -> None:
        """One step: counts [L][M] (integral values), tokens (N of the step),
        router [L][len(blocks)*M] when the writer has a router file.

        Raises ValueError when the writer is closed, the step does not follow
        the last one, or counts / router rows have the wrong number of layers
        or values; OSError when writing fails."""
        if self.closed:
            raise ValueError("TraceWriter is closed")
        step = int(step)
        if self.last_step is not None and step <= self.last_step:
            raise ValueError("step %d after step %d: steps must increase" % (step, self.last_step))
        L, M = self.num_layers, self.num_experts
        if len(counts) != L:
            raise ValueError("counts has %d layers, the trace has %d" % (len(counts), L))
        if self._rf is not None:
            if router is None or len(router) != L:
                raise ValueError("the trace has a router file: router rows [L][%d] are needed"
                                 % (len(self.blocks) * M))
        cl, rl = [], []
        fmt = self.fmt
        for layer in range(L):
            c = counts[layer]
            if len(c) != M:
                raise ValueError("layer %d has %d counts, expected %d" % (layer, len(c), M))
            cl.append("%d,%d,%d,%s\n" % (step, layer, int(tokens), ",".join(str(int(v)) for v in c)))
            if self._rf is not None:
                r = router[layer]  # type: ignore[index]
                if len(r) != len(self.blocks) * M:
                    raise ValueError("layer %d has %d router values, expected %d"
                                     % (layer, len(r), len(self.blocks) * M))
                rl.append("%d,%d,%s\n" % (step, layer, ",".join(fmt % v for v in r)))
        self._cf.write("".join(cl))
        if self._rf is not None:
            self._rf.write("".join(rl))
        if self.first_step is None:
            self.first_step = step
        self.last_step = step
        self.steps += 1

    def close(self, meta: Mapping[str, Any] | None = None) -> tuple[str, str | None]:
        """Finishes the files (renaming NAME...part); writes NAME.meta.json when
        meta (a dict) is given. Returns (counts path, router path or None); a
        second close() only returns them. Raises OSError when flushing,
        renaming or writing meta.json fails, TypeError when meta is not
        JSON-serialisable."""
        if self.closed:
            return self.counts_path, self.router_path
        self.closed = True
        _close(self._cf)
        os.replace(self.counts_path + ".part", self.counts_path)
        if self._rf is not None:
            _close(self._rf)
            os.replace(self.router_path + ".part", self.router_path)  # type: ignore[operator, arg-type]
        if meta is not None:
            with open(self.meta_path, "w") as fh:
                json.dump(meta, fh, indent=1)
                fh.write("\n")
        return self.counts_path, self.router_path

    def abort(self) -> None:
        """Closes and removes the .part files (nothing is renamed). Raises
        OSError only when closing a file fails (the .part file is removed
        anyway)."""
        if self.closed:
            return
        self.closed = True
        for w, p in ((self._cf, self.counts_path), (self._rf, self.router_path)):
            if w is not None:
                try:
                    _close(w)
                finally:
                    try:
                        os.remove(p + ".part")  # type: ignore[operator]
                    except OSError:
                        pass

    def __enter__(self) -> TraceWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> Literal[False]:
        """close() when the block succeeded, abort() when it raised."""
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
