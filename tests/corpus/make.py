#!/usr/bin/env python3
"""Writes the hostile-input corpus of tests/tests/hostile.rs (standard library only).

Each file is named for what is wrong with it; `valid-*` files are the fuzzers' seeds and must
load. Run from this folder; the outputs are committed (all small). `fuzz-*` files are inputs
the fuzzer once crashed a reader with, kept as regression cases. The tiny model they are
for is `Tiny` in hostile.rs: input [1, 6, 6], conv(2, k=3) -> relu, linear(3).
"""
import gzip, json, os, struct, zlib

PARAMS = {"c.weight": [2, 1, 3, 3], "c.bias": [2], "fc.weight": [3, 32], "fc.bias": [3]}


def put(kind, name, data):
    os.makedirs(kind, exist_ok=True)
    with open(os.path.join(kind, name), "wb") as f:
        f.write(data)


def safetensors(tensors, metadata=None, dtype="F32", fill=0.25):
    header, blob = {}, b""
    for name, shape in tensors.items():
        n = 1
        for d in shape:
            n *= d
        data = struct.pack("<%df" % n, *([fill] * n))
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if metadata:
        header["__metadata__"] = metadata
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + blob


ok = safetensors(PARAMS)
put("safetensors", "valid-weights.safetensors", ok)
put("safetensors", "truncated.safetensors", ok[: len(ok) // 2])
put("safetensors", "empty.safetensors", b"")
put("safetensors", "header-length-huge.safetensors", struct.pack("<Q", 1 << 60) + ok[8:])
put("safetensors", "header-longer-than-file.safetensors", struct.pack("<Q", len(ok)) + ok[8:])
put("safetensors", "header-not-json.safetensors", struct.pack("<Q", 16) + b"{not json at all" + ok[24:])
lying = json.loads(ok[8 : 8 + struct.unpack("<Q", ok[:8])[0]])
lying["fc.weight"]["data_offsets"] = [0, 1 << 40]
h = json.dumps(lying).encode()
put("safetensors", "lying-offsets.safetensors", struct.pack("<Q", len(h)) + h + ok[8 + struct.unpack("<Q", ok[:8])[0] :])
put("safetensors", "wrong-dtype.safetensors", safetensors({k: v for k, v in PARAMS.items()}, dtype="I32"))
put("safetensors", "wrong-shape.safetensors", safetensors({**PARAMS, "fc.weight": [32, 3]}))
put("safetensors", "length-prefix-only.safetensors", safetensors(PARAMS)[:8])
put("safetensors", "nan-filled.safetensors", safetensors(PARAMS, fill=float("nan")))
put("safetensors", "missing-tensor.safetensors", safetensors({k: v for k, v in PARAMS.items() if k != "c.bias"}))
ckpt = {**PARAMS, **{"momentum." + k: v for k, v in PARAMS.items()}}
put("safetensors", "valid-checkpoint.safetensors", safetensors(ckpt, {"epoch": "1", "batch_in_epoch": "0", "step": "3", "lr_bits": "1008981770", "seed": "0", "best_val_error_bits": "4607182418800017408", "bad_epochs": "0"}))
put("safetensors", "checkpoint-bad-metadata.safetensors", safetensors(ckpt, {"epoch": "one", "batch_in_epoch": "0", "step": "-3", "lr_bits": "1008981770", "seed": "0", "best_val_error_bits": "0", "bad_epochs": "0"}))


def npy(descr, shape, payload, version=1, fortran=False, header_len=None):
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, fortran, "".join("%d," % s for s in shape))
    pad = 64 - (10 + len(d) + 1) % 64
    h = (d + " " * pad + "\n").encode()
    if version == 1:
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", header_len if header_len is not None else len(h)) + h + payload
    return b"\x93NUMPY\x02\x00" + struct.pack("<I", header_len if header_len is not None else len(h)) + h + payload


img = struct.pack("<36f", *[0.5] * 36)
put("npy", "valid-input.npy", npy("<f4", [1, 1, 6, 6], img))
put("npy", "valid-input-f64.npy", npy("<f8", [1, 6, 6], struct.pack("<36d", *[0.5] * 36)))
put("npy", "valid-labels.npy", npy("<i8", [3], struct.pack("<3q", 0, 2, 1)))
put("npy", "truncated-data.npy", npy("<f4", [1, 1, 6, 6], img[:50]))
put("npy", "shape-lies.npy", npy("<f4", [1 << 50, 1, 6, 6], img))
put("npy", "labels-shape-lies.npy", npy("<i8", [1 << 60], b"\0" * 16))
put("npy", "header-length-huge.npy", npy("<f4", [1, 1, 6, 6], img, version=2, header_len=0xFFFFFFFF))
put("npy", "wrong-dtype.npy", npy("<i4", [1, 1, 6, 6], img))
put("npy", "fortran-order.npy", npy("<f4", [1, 1, 6, 6], img, fortran=True))
put("npy", "nan-filled.npy", npy("<f4", [1, 1, 6, 6], struct.pack("<36f", *[float("nan")] * 36)))
put("npy", "labels-out-of-range.npy", npy("<i8", [2], struct.pack("<2q", 0, 99)))
put("npy", "not-npy.npy", b"just some text, not an array\n")


def idx(dims, payload):
    return bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + payload


put("idx", "valid-images.idx", idx([2, 6, 6], bytes(range(72))))
put("idx", "valid-images.idx.gz", gzip.compress(idx([2, 6, 6], bytes(range(72))), mtime=0))
put("idx", "valid-labels.idx", idx([2], b"\x01\x02"))
put("idx", "truncated-header.idx", idx([2, 6, 6], b"")[:7])
put("idx", "truncated-data.idx", idx([2, 6, 6], bytes(10)))
put("idx", "dims-overflow.idx", idx([0xFFFFFFFF, 0xFFFFFFFF, 0xFFFFFFFF], b""))
put("idx", "claims-16-gib.idx.gz", gzip.compress(idx([0xFFFFFFFF, 2, 2], bytes(1000)), mtime=0))
put("idx", "bomb-longer-than-header.idx.gz", gzip.compress(idx([10, 28, 28], bytes(100 << 20)), 9, mtime=0))
put("idx", "corrupt-gzip.idx.gz", gzip.compress(idx([2, 6, 6], bytes(72)), mtime=0)[:30] + b"garbage")
put("idx", "wrong-magic.idx", b"\x00\x00\x0d\x03" + bytes(20))


def png(width, height, rows=None, colour=0):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, 0)
    raw = rows if rows is not None else b"".join(b"\0" + bytes([(x * 40) % 256 for x in range(width)]) for _ in range(height))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


good = png(6, 6)
put("images", "valid-grey.png", good)
put("images", "truncated.png", good[: len(good) - 20])
put("images", "bomb-16384x16384.png", png(16384, 16384, rows=b"\0" * 100))
put("images", "bomb-wide-but-thin-data.png", png(100000, 3000, rows=b"\0" * 100))
put("images", "zero-size.png", png(0, 0, rows=b""))
put("images", "empty.png", b"")
put("images", "text-named-png.png", b"hello, not an image\n")
put("images", "jpeg-magic-garbage.jpg", b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)

os.makedirs("dsl", exist_ok=True)
dsl = {
    "valid-tiny.alexnet": "pub Tiny { input: [1, 6, 6], c: conv(2, k = 3) -> relu, fc: linear(3) }",
    "valid-blocks.alexnet": "pub Blocks { input: [3, 21, 17], max_batch: 4, a: conv(8, k = 3, s = 2, p = 1) -> relu -> lrn(n = 5, alpha = 0.0001, beta = 0.75, k = 2) -> maxpool(k = 3, s = 2), b: conv(6, k = 1, groups = 2) -> relu, fc: linear(7) -> relu -> dropout(0.5), out: linear(4) -> softmax }",
    "unclosed-brace.alexnet": "pub Tiny { input: [1, 6, 6], c: conv(2, k = 3",
    "huge-numbers.alexnet": "pub Huge { input: [4294967295, 4294967295, 4294967295], c: conv(4294967295, k = 4294967295, s = 0), fc: linear(18446744073709551615) }",
    "zero-everything.alexnet": "pub Zero { input: [0, 0, 0], c: conv(0, k = 0, s = 0, p = 0, groups = 0) -> maxpool(k = 0, s = 0), fc: linear(0) }",
    "negative.alexnet": "pub Neg { input: [1, -6, 6], c: conv(-2, k = 3), fc: linear(3) }",
    "unknown-op.alexnet": "pub Tiny { input: [1, 6, 6], c: frobnicate(2) -> relu, fc: linear(3) }",
    "dropout-nan.alexnet": "pub Tiny { input: [1, 6, 6], c: conv(2, k = 3) -> dropout(NaN), fc: linear(3) -> dropout(1.5) }",
    "lrn-extreme.alexnet": "pub Tiny { input: [1, 6, 6], c: conv(2, k = 3) -> lrn(n = 99999999, alpha = 1e308, beta = -1e308, k = 0), fc: linear(3) }",
    "empty.alexnet": "",
}
for name, text in dsl.items():
    put("dsl", name, text.encode())
