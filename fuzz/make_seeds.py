#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/NAME/seed_*).

    /usr/bin/python3 fuzz/make_seeds.py

The seeds are small valid (and a few nearly valid) inputs in each target's
input format (see the comment at the top of each *_fuzzer.cc); libFuzzer
mutates from there. Reproducers of findings live next to them as
corpus/NAME/regress_* and are not written by this script. Needs only the
Python standard library (protobuf messages are encoded by hand).
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def write(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, "seed_" + name), "wb") as f:
        f.write(data)


# --- protobuf wire format -------------------------------------------------
def varint(v):
    if v < 0:
        v += 1 << 64
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def field_varint(num, v):
    return varint(num << 3) + varint(v)


def field_bytes(num, b):
    if isinstance(b, str):
        b = b.encode()
    return varint((num << 3) | 2) + varint(len(b)) + b


def field_double(num, v):
    return varint((num << 3) | 1) + struct.pack("<d", v)


def packed_doubles(num, values):
    return field_bytes(num, b"".join(struct.pack("<d", v) for v in values))


def step_msg(step, counts, source=0, logits=None, tokens=None):
    m = field_varint(1, step) + field_varint(2, source) + packed_doubles(3, counts)
    if logits:
        m += packed_doubles(4, logits)
    if tokens is not None:
        m += field_double(5, tokens)
    return m


def batch(job_id, steps):
    m = field_bytes(1, job_id) if job_id is not None else b""
    for s in steps:
        m += field_bytes(2, s)
    return m


def framed(msg):
    return struct.pack("<H", len(msg)) + msg


# --- trace_reader ---------------------------------------------------------
def trace_seeds():
    counts = "step,layer,tokens,c0,c1,c2,c3\n" + "".join(
        f"{s},{l},10,{5 + s},{3 + l},{2},{10 - s - l}\n"
        for s in range(4) for l in (0, 2))
    router = "step,layer,z0,z1,z2,z3,p0,p1,p2,p3,s0,s1,s2,s3\n" + "".join(
        f"{s},{l},0.1,-0.2,0.05,0.0,0.3,0.2,0.25,0.25,1.0,-1.0,0.5,0.0\n"
        for s in range(4) for l in (0, 2))
    write("trace_reader", "counts_only", b"\x00" + counts.encode())
    write("trace_reader", "counts_router", b"\x01" + counts.encode() + b"\x00" + router.encode())
    write("trace_reader", "gzip", b"\x02" + counts.encode())
    write("trace_reader", "gzip_truncated", b"\x06" + counts.encode())
    write("trace_reader", "no_tokens_crlf",
          b"\x00step,layer,c1,c0\r\n5,7,1,2\r\n9,7,0,4\r\n")
    write("trace_reader", "bad_row", b"\x00step,layer,c0,c1\n0,0,1\n")
    write("trace_reader", "router_mismatch",
          b"\x01step,layer,c0,c1\n0,0,1,2\n1,0,3,4\n\x00step,layer,z0,z1\n0,0,1,2\n")
    write("trace_reader", "quoted", b'\x00"step",layer,c0,c1\n0,0,"1",2\n')


# --- ingest ---------------------------------------------------------------
def ingest_seeds():
    # Structured spec: L=2 (byte 1), M=4 (byte 2), K=2 (byte 1), 1 source
    # (byte 0), forecasting+health on (byte 0).
    spec2x4 = bytes([1, 2, 1, 0, 0])
    steps = [step_msg(s, [3, 1, 0, 4, 2, 2, 2, 2], tokens=4.0,
                      logits=[0.1, -0.1, 0, 0.2, 0, 0, 0, 0]) for s in range(6)]
    write("ingest", "single_source",
          bytes([8]) + spec2x4 + framed(batch("fz", steps)))
    # Gaps, a duplicate, an old step, a wrong size, a negative count.
    bad = [step_msg(0, [1] * 8), step_msg(0, [1] * 8), step_msg(5, [1] * 8),
           step_msg(3, [1] * 8), step_msg(6, [1] * 7), step_msg(7, [1, -1] + [0] * 6),
           step_msg(8, [1] * 8, tokens=1.0)]
    write("ingest", "rejections", bytes([0]) + spec2x4 + framed(batch("fz", bad)))
    # Two sources (byte 1), timeouts between batches, flush at the end.
    spec_ms = bytes([1, 2, 1, 1, 0])
    b1 = batch("fz", [step_msg(s, [1] * 8, source=0) for s in range(3)])
    b2 = batch("fz", [step_msg(s, [2] * 8, source=1) for s in range(2)])
    write("ingest", "multi_source",
          bytes([4 | 8 | 16]) + spec_ms + framed(b1) + framed(b2))
    # Spec as a RegisterJobRequest message; unknown job in the batch.
    jobspec = (field_bytes(1, "p") + field_varint(2, 1) + field_varint(3, 3) +
               field_varint(4, 1) + field_bytes(9, "last_value") +
               field_bytes(9, "ema(0.5)") + field_varint(10, 1) + field_varint(10, 2))
    req = field_bytes(1, jobspec)
    write("ingest", "proto_spec",
          bytes([1 | 2 | 8, len(req)]) + req +
          framed(batch("p", [step_msg(s, [1, 2, 3]) for s in range(5)])) +
          framed(batch("other", [step_msg(9, [1, 2, 3])])))


# --- plan -----------------------------------------------------------------
def plan_header(flags, gpus, slots, nodes=1, groups=1, budget=-1, extra=1,
                bpe=0, ex0=-1, ex1=-1):
    # IntInRange bytes: value - lo (ranges in plan_fuzzer.cc).
    return bytes([flags, gpus - 1, slots - 1, nodes - 1, groups - 1, budget + 1,
                  extra - 1, bpe, ex0 + 1, ex1 + 1])


def plan_seeds():
    loads = '{"loads": [[10, 1, 3, 7, 2, 2, 9, 1], [4, 4, 4, 4, 1, 1, 1, 1]]}'
    write("plan", "default", plan_header(16, 2, 8) + loads.encode())
    write("plan", "eplb_groups_nodes",
          plan_header(1 | 4, 4, 12, nodes=2, groups=2) + loads.encode())
    current = '{"phy2log": [[0,1,2,3,4,5,6,7],[7,6,5,4,3,2,1,0]]}'
    write("plan", "current_decision",
          plan_header(2 | 8 | 16 | 32, 2, 8, budget=3, bpe=1) +
          loads.encode() + b"\x00" + current.encode())
    slot_loads = '{"slot_loads": [[1,2,3,4,5,6,7,8],[8,7,6,5,4,3,2,1]]}'
    write("plan", "slot_loads",
          plan_header(2 | 64, 4, 8, ex0=1) + slot_loads.encode() + b"\x00" +
          current.encode())
    write("plan", "bad_json", plan_header(0, 2, 8) + b'{"loads": [[1, 2], [3]]}')


# --- c_api ----------------------------------------------------------------
def c_api_seeds():
    # Engine options: flags 0, max_jobs 3, history 16, pending 4, health
    # window 4, bootstrap 2, dead window 4.
    opts = bytes([0, 3, 16, 4, 4, 2, 4])
    # register job "a": op 0, j 0, f 0, L 2, M 4, K 2, 1 source, unit 0,
    # router 0, spec pointer set.
    register = bytes([0, 0, 0, 2, 4, 2, 1, 1, 1, 1])

    def ingest(step, logits=False, tokens=False, j=0):
        f = (2 if logits else 0) | (32 if tokens else 0)
        out = bytes([3, j, step + 1, 1, f, 3]) + bytes([5, 1, 0, 3, 2, 2, 2, 2])
        if logits:
            out += bytes([3]) + bytes([4, 5, 3, 4, 4, 4, 4, 4])
        out += bytes([10])  # tokens: Number() byte -> 10 - ... (any)
        return out

    body = register + b"".join(ingest(s, logits=True) for s in range(10))
    forecast = bytes([5, 0, 2, 1, 2, 0, 0]) + bytes([1, 1, 3])
    placement = bytes([8, 0, 0, 2, 3, 0, 0, 1, 1, 9, 1, 0, 0]) + bytes([3] * 5)
    health = bytes([9, 0, 3, 0])
    write("c_api", "happy_path", opts + body + forecast + placement + health)
    write("c_api", "forecast_into_state",
          opts + body + bytes([6, 0, 3, 0, 2]) + bytes([7, 0, 3]))
    # NULL engine / job id, unknown job, bad sizes, delete and reuse.
    write("c_api", "bad_calls",
          opts + bytes([0x40 | 3, 0, 1, 1, 0, 3]) + bytes([0x80 | 2, 0, 0]) +
          register + ingest(0) + bytes([3, 0, 2, 1, 0, 1]) + bytes([1] * 9) +
          bytes([1, 0]) + register + ingest(0) + bytes([10, 0, 20]) + bytes([11, 0]))
    # Multi-source job with a zero source timeout.
    ms = bytes([0, 1, 0, 1, 3, 1, 2, 1, 1, 1])
    write("c_api", "multi_source",
          bytes([4, 3, 8, 2, 4, 1, 4, 6]) + ms + ingest(0, j=1) + ingest(1, j=1) +
          bytes([2, 1, 1]))


if __name__ == "__main__":
    trace_seeds()
    ingest_seeds()
    plan_seeds()
    c_api_seeds()
