"""A second .adt decoder, written from FORMAT.md alone in plain Python (no NumPy, no bitarray, nothing
from adt.runtime.format except the preset dictionary's bytes, which the spec incorporates by
reference). Slow and simple on purpose: it checks that the spec is complete enough to decode every
vector, and that the reference reader agrees with it bit for bit. It validates only a little; the
malformed corpus tests the reference reader's checks.
"""
from __future__ import annotations

import struct
import zlib


class Reader:
    def __init__(self, data: bytes, pos: int = 0, end: int | None = None):
        self.data, self.pos, self.end = data, pos, len(data) if end is None else end

    def u8(self) -> int:
        assert self.pos < self.end
        self.pos += 1
        return self.data[self.pos - 1]

    def take(self, n: int) -> bytes:
        assert self.pos + n <= self.end
        self.pos += n
        return self.data[self.pos - n:self.pos]

    def varint(self) -> int:  # §1: unsigned LEB128, <= 9 bytes, minimal
        value = 0
        for i in range(9):
            byte = self.u8()
            value |= (byte & 0x7F) << (7 * i)
            if not byte & 0x80:
                assert not (byte == 0 and i > 0)
                return value
        raise AssertionError("varint longer than 9 bytes")

    def string(self) -> str:
        return self.take(self.varint()).decode("utf-8")

    def f32(self) -> float:
        return struct.unpack("<f", self.take(4))[0]


class Bits:  # §1: MSB first
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]
        b = (byte >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return b

    def exp_golomb(self) -> int:  # §6.2: order 0
        zeros = 0
        while self.bit() == 0:
            zeros += 1
        u = 1
        for _ in range(zeros):
            u = (u << 1) | self.bit()
        return u - 1


def unzigzag(z: int) -> int:
    return z >> 1 if z % 2 == 0 else -((z + 1) >> 1)


def canonical_codes(lengths: dict[int, int]) -> dict[tuple[int, int], int]:
    """§6.1: (length, code value) -> symbol, DEFLATE's assignment."""
    codes, code, prev = {}, 0, None
    for sym, n in sorted(lengths.items(), key=lambda kv: (kv[1], kv[0])):
        if prev is not None:
            code = (code + 1) << (n - prev)
        codes[(n, code)] = sym
        prev = n
    return codes


def dequantize(s: int, q: int, b: float) -> float:
    """§9: binary64 operations in the stated order, one rounding to binary32."""
    v = (-b) + s * ((2.0 * b) / q)
    return struct.unpack("<f", struct.pack("<f", v))[0]


def decode(data: bytes, dictionary: bytes) -> dict:
    r = Reader(data)
    assert r.take(4) == b"ADT\x1a"
    major = r.u8()
    assert major in (1, 2)  # §13: majors 1 and 2
    minor = r.u8()
    entries = [(r.u8(), r.varint()) for _ in range(r.varint())]
    offset, bodies = r.pos, {}
    for kind, length in entries:
        bodies[kind] = (offset, offset + length)
        offset += length
    assert offset == len(data) - 4
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    out = {"major": major, "minor": minor, "metadata": {}, "architecture": None}

    if 1 in bodies:  # §4
        m = Reader(data, *bodies[1])
        for _ in range(m.varint()):
            key = m.string()
            out["metadata"][key] = m.string()
    if 2 in bodies:  # §5
        a = Reader(data, *bodies[2])
        fmt, size = a.u8(), a.varint()
        d = zlib.decompressobj(-15, zdict=dictionary) if fmt == 1 else zlib.decompressobj(-15)
        out["architecture"] = d.decompress(a.take(a.end - a.pos))
        assert len(out["architecture"]) == size and d.eof

    c = Reader(data, *bodies[3])  # §6
    tables = []
    for _ in range(c.varint()):
        smin, nused = c.varint(), c.varint()
        bits = Bits(data[c.pos:c.end])
        lengths, sym, length = {}, smin, 0
        for j in range(nused):
            if j:
                sym += bits.exp_golomb() + 1
            length += unzigzag(bits.exp_golomb())
            lengths[sym] = length
        c.pos += (bits.pos + 7) // 8
        tables.append(canonical_codes(lengths))

    t = Reader(data, *bodies[4])  # §7
    groups = []
    for _ in range(t.varint()):
        assert t.u8() == 0
        groups.append({"q": t.varint(), "b": t.f32(), "table": t.varint()})
    cores = []
    for _ in range(t.varint()):
        kind, order = t.u8(), t.varint()
        dims = [t.varint() for _ in range(order)] if kind == 0 else [t.varint()] * order
        cores.append({"kind": kind, "dims": dims, "group": t.varint()})
    params = []
    for _ in range(t.varint()):
        p = {"name": t.string()}
        p["shape"] = [t.varint() for _ in range(t.varint())]
        p["encoding"], p["group"] = t.u8(), t.varint()
        if p["encoding"] == 1:
            p["core"] = t.varint()
            p["reshape"] = [t.varint() for _ in cores[p["core"]]["dims"]]
        elif p["encoding"] == 2:  # §7.3 tensor train: order, reshape, ranks (r_0 = r_d = 1 implicit)
            assert major >= 2
            d = t.varint()
            assert 1 <= d <= 8
            p["reshape"] = [t.varint() for _ in range(d)]
            assert _prod(p["reshape"]) == _prod(p["shape"])
            p["ranks"] = [t.varint() for _ in range(d - 1)]
        else:
            assert p["encoding"] == 0
        params.append(p)

    bits = Bits(data[bodies[5][0]:bodies[5][1]])  # §8

    def symbols(count: int, group: int) -> list[int]:
        codes, res = tables[groups[group]["table"]], []
        for _ in range(count):
            n, code = 0, 0
            while (n, code) not in codes:
                code = (code << 1) | bits.bit()
                n += 1
                assert n <= 24
            res.append(codes[(n, code)])
        return res

    for core in cores:
        count = core["dims"][0] if core["kind"] == 1 else _prod(core["dims"])
        core["symbols"] = symbols(count, core["group"])
    for p in params:
        if p["encoding"] == 0:
            p["symbols"] = symbols(_prod(p["shape"]), p["group"])
        elif p["encoding"] == 2:  # §8: cores G_1..G_d, each r_{k-1} n_k r_k values, row-major
            r = [1] + p["ranks"] + [1]
            p["tt_cores"] = [symbols(r[k] * n * r[k + 1], p["group"]) for k, n in enumerate(p["reshape"])]
        else:
            ks = cores[p["core"]]["dims"]
            p["factors"] = [symbols(n * k, p["group"]) for n, k in zip(p["reshape"], ks)]
    assert (bits.pos + 7) // 8 == len(bits.data)
    out.update(groups=groups, cores=cores, params=params, payload_bits=bits.pos)
    for item in cores + params:
        g = groups[item["group"]]
        for key in ("symbols",) if "symbols" in item else ():
            item["values"] = [dequantize(s, g["q"], g["b"]) for s in item["symbols"]]
        if "factors" in item:
            item["factor_values"] = [[dequantize(s, g["q"], g["b"]) for s in f] for f in item["factors"]]
        if "tt_cores" in item:
            item["tt_core_values"] = [[dequantize(s, g["q"], g["b"]) for s in c] for c in item["tt_cores"]]
            item["weight"] = tt_weight(item["reshape"], item["ranks"], item["tt_core_values"])
    return out


def tt_weight(reshape: list[int], ranks: list[int], cores: list[list[float]]) -> list[float]:
    """§10: T[j_1..j_d] = G_1[0,j_1,:] G_2[:,j_2,:] ... G_d[:,j_d,0], left to right in binary64, each
    element rounded once to binary32; the elements in row-major order of (n_1..n_d), i.e. of shape."""
    r = [1] + ranks + [1]
    rows = [[1.0]]      # for every prefix j_1..j_k (row-major): the 1 x r_k row vector of the product so far
    for k, n in enumerate(reshape):
        a, b, g = r[k], r[k + 1], cores[k]
        nxt = []
        for vec in rows:
            for j in range(n):
                # G_k[:, j, :] is the a x b matrix at g[(x * n + j) * b + y]
                nxt.append([sum(vec[x] * g[(x * n + j) * b + y] for x in range(a)) for y in range(b)])
        rows = nxt
    return [struct.unpack("<f", struct.pack("<f", vec[0]))[0] for vec in rows]


def _prod(xs) -> int:
    n = 1
    for x in xs:
        n *= x
    return n
