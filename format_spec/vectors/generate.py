"""Generate the .adt test vectors of FORMAT.md and their expected decoded arrays.

    .venv/bin/python format_spec/vectors/generate.py           # (re)write the vectors
    .venv/bin/python format_spec/vectors/generate.py --check   # exit 1 if any committed file differs

For each vector NAME this writes:
  NAME.adt    the file, built with AdtWriter (deterministic: fixed seeds, fixed inputs)
  NAME.npz    the expected decoded arrays, computed from the WRITER'S INPUTS (not by reading the
              file back): ``core{i}_symbols`` (uint16, as stored: the diagonal for a CP core),
              ``core{i}_values`` (float32, dense: CP expanded), ``param{i}_symbols`` /
              ``param{i}_values`` for plain parameters, ``param{i}_factor{j}_symbols`` /
              ``param{i}_factor{j}_values`` for Tucker factors, ``param{i}_core{j}_symbols`` /
              ``param{i}_core{j}_values`` (shape (r_{j-1}, n_j, r_j)) for the cores of a tensor-train
              parameter and ``param{i}_weight``, its rebuilt float32 weight (an einsum in float64 of
              values whose products and sums are exact there, rounded once)
  NAME.json   everything else a decoder must report: metadata, groups, cores, parameters (name,
              shape, encoding, group, core, reshape, TT ranks), architecture (length + SHA-256), section layout

tests/format/test_vectors.py decodes every vector and compares, and regenerates the bytes (golden test).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np

from adt.runtime.format import AdtWriter, dequantize, quantize

HERE = Path(__file__).resolve().parent

# A 91-byte ONNX ModelProto (ir_version 8, opset 17): output = Add(input, w), input/output float
# [N, 4]; "w" is a tensor-table parameter, absent from initializers as the architecture contract
# requires. Made once with onnx.helper and embedded so that the vector never depends on the onnx
# package's serializer.
TINY_ONNX = bytes.fromhex(
    "08083a510a170a05696e7075740a017712066f757470757422034164641201675a180a05696e707574120f0a0d08"
    "0112090a0312014e0a02080462190a066f7574707574120f0a0d080112090a0312014e0a02080442040a001011"
)


class Spec:
    """Records what goes into a writer so that the expected arrays come from the inputs."""

    def __init__(self, tables: str = "auto"):
        self.w = AdtWriter(tables=tables)
        self.groups: list[tuple[int, float]] = []
        self.cores: list[dict] = []
        self.params: list[dict] = []
        self.meta: dict[str, str] = {}
        self.arch: bytes | None = None

    def metadata(self, key: str, value: str) -> None:
        self.w.add_metadata(key, value)
        self.meta[key] = value

    def architecture(self, data: bytes) -> None:
        self.w.set_architecture(data)
        self.arch = data

    def group(self, q: int, b: float) -> int:
        self.groups.append((q, b))
        return self.w.add_group(q, b)

    def core(self, symbols: np.ndarray, group: int, cp_order: int | None = None) -> int:
        symbols = np.asarray(symbols, dtype=np.uint16)
        dims = (symbols.size,) * cp_order if cp_order else symbols.shape
        self.cores.append({"kind": "cp" if cp_order else "tucker", "dims": list(dims), "group": group, "symbols": symbols})
        return self.w.add_core(symbols, group, cp_order=cp_order)

    def plain(self, name: str, symbols: np.ndarray, group: int) -> None:
        symbols = np.asarray(symbols, dtype=np.uint16)
        self.params.append({"name": name, "shape": list(symbols.shape), "encoding": "plain", "group": group, "symbols": symbols})
        self.w.add_plain(name, symbols, group)

    def tucker(self, name: str, shape: tuple[int, ...], core: int, factors: list[np.ndarray], group: int) -> None:
        factors = [np.asarray(f, dtype=np.uint16) for f in factors]
        self.params.append({"name": name, "shape": list(shape), "encoding": "tucker", "group": group, "core": core,
                            "reshape": [int(f.shape[0]) for f in factors], "factors": factors})
        self.w.add_tucker(name, shape, core, factors, group)

    def tt(self, name: str, shape: tuple[int, ...], cores: list[np.ndarray], group: int) -> None:
        cores = [np.asarray(g, dtype=np.uint16) for g in cores]
        self.params.append({"name": name, "shape": list(shape), "encoding": "tt", "group": group,
                            "reshape": [int(g.shape[1]) for g in cores],
                            "ranks": [int(g.shape[2]) for g in cores[:-1]], "cores": cores})
        self.w.add_tt(name, shape, cores, group)

    # -- expected outputs ------------------------------------------------------------------------
    def arrays(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i, c in enumerate(self.cores):
            q, b = self.groups[c["group"]]
            out[f"core{i}_symbols"] = c["symbols"]
            vals = dequantize(c["symbols"], q, b)
            if c["kind"] == "cp":
                dense = np.zeros(c["dims"], dtype=np.float32)
                idx = np.arange(c["dims"][0])
                dense[(idx,) * len(c["dims"])] = vals
                vals = dense
            out[f"core{i}_values"] = vals
        for i, p in enumerate(self.params):
            q, b = self.groups[p["group"]]
            if p["encoding"] == "plain":
                out[f"param{i}_symbols"] = p["symbols"]
                out[f"param{i}_values"] = dequantize(p["symbols"], q, b)
            elif p["encoding"] == "tt":
                vals = [dequantize(g, q, b) for g in p["cores"]]
                for j, (g, v) in enumerate(zip(p["cores"], vals)):
                    out[f"param{i}_core{j}_symbols"] = g
                    out[f"param{i}_core{j}_values"] = v
                out[f"param{i}_weight"] = tt_dense(vals).reshape(p["shape"]).astype(np.float32)
            else:
                for j, f in enumerate(p["factors"]):
                    out[f"param{i}_factor{j}_symbols"] = f
                    out[f"param{i}_factor{j}_values"] = dequantize(f, q, b)
        return out

    def description(self, data: bytes) -> dict:
        from adt.runtime.format import read_adt  # only for the section layout, which the spec fixes

        f = read_adt(data)
        return {
            "file_bytes": len(data),
            "metadata": self.meta,
            "architecture": None if self.arch is None else {
                "bytes": len(self.arch), "sha256": hashlib.sha256(self.arch).hexdigest()},
            "groups": [{"q": q, "b": float(np.float32(b))} for q, b in self.groups],
            "cores": [{"kind": c["kind"], "dims": c["dims"], "group": c["group"]} for c in self.cores],
            "params": [{k: v for k, v in p.items() if k not in ("symbols", "factors", "cores")} for p in self.params],
            "tables": len(f.tables),
            "sections": [{"kind": s.kind, "name": s.name, "offset": s.offset, "length": s.length} for s in f.sections],
            "payload_bits": f.payload_bits,
            # DEFLATE output depends on the zlib build; the golden test compares architecture bytes
            # only under the zlib that wrote them (what they inflate to is compared everywhere).
            "zlib": zlib.ZLIB_RUNTIME_VERSION if self.arch is not None else None,
        }


def tt_dense(values: list[np.ndarray]) -> np.ndarray:
    """FORMAT.md §10's tensor train as one float64 einsum: T[j_1..j_d] = G_1[0,j_1,:] ... G_d[:,j_d,0]."""
    d = len(values)
    ranks, modes = "ABCDEFGHI"[:d + 1], "abcdefgh"[:d]
    spec = ",".join(ranks[k] + modes[k] + ranks[k + 1] for k in range(d)) + "->" + ranks[0] + modes + ranks[d]
    return np.einsum(spec, *(np.asarray(v, np.float64) for v in values))[0, ..., 0]


def laplace_symbols(rng: np.random.Generator, shape, q: int, b: float, scale: float) -> np.ndarray:
    return quantize(rng.laplace(0.0, scale, size=shape), q, b)


def build() -> dict[str, Spec]:
    """Every vector, built from scratch with fixed inputs and seeds."""
    v: dict[str, Spec] = {}

    # 1. The smallest file: no metadata, no architecture, no groups, no tensors (21 bytes).
    s = Spec()
    v["empty"] = s

    # 2. One plain tensor, tiny enough for FORMAT.md's byte-by-byte example.
    s = Spec()
    g = s.group(4, 1.0)
    s.plain("x", np.array([1, 2, 2, 3], dtype=np.uint16), g)
    v["plain"] = s

    # 3. A Tucker weight and a plain bias sharing one group, with metadata.
    rng = np.random.default_rng(20240003)
    s = Spec()
    s.metadata("producer", "adt format vectors")
    s.metadata("model", "tucker+bias")
    g = s.group(512, 3.0)
    c = s.core(laplace_symbols(rng, (3, 2), 512, 3.0, 0.8), g)
    s.tucker("fc.weight", (4, 6), c, [laplace_symbols(rng, (8, 3), 512, 3.0, 0.3),
                                      laplace_symbols(rng, (3, 2), 512, 3.0, 0.3)], g)
    s.plain("fc.bias", laplace_symbols(rng, (4,), 512, 3.0, 0.1), g)
    v["tucker_bias_meta"] = s

    # 4. SCADA-Tucker: one shared order-3 core used by two parameters; the second has only two real
    #    modes, so its third factor is a padded 1 x k matrix (reshape (5, 4, 1)).
    rng = np.random.default_rng(20240004)
    s = Spec()
    g = s.group(64, 2.0)
    c = s.core(laplace_symbols(rng, (2, 2, 3), 64, 2.0, 0.7), g)
    s.tucker("conv.weight", (3, 2, 2, 2), c, [laplace_symbols(rng, (2, 2), 64, 2.0, 0.4),
                                              laplace_symbols(rng, (3, 2), 64, 2.0, 0.4),
                                              laplace_symbols(rng, (4, 3), 64, 2.0, 0.4)], g)
    s.tucker("fc.weight", (5, 4), c, [laplace_symbols(rng, (5, 2), 64, 2.0, 0.4),
                                      laplace_symbols(rng, (4, 2), 64, 2.0, 0.4),
                                      laplace_symbols(rng, (1, 3), 64, 2.0, 0.4)], g)
    v["scada_shared"] = s

    # 5. A CP core: order 3, rank 2; only the diagonal is stored.
    rng = np.random.default_rng(20240005)
    s = Spec()
    g = s.group(256, 1.5)
    c = s.core(laplace_symbols(rng, (2,), 256, 1.5, 0.5), g, cp_order=3)
    s.tucker("cp.weight", (3, 4, 5), c, [laplace_symbols(rng, (n, 2), 256, 1.5, 0.4) for n in (3, 4, 5)], g)
    v["cp"] = s

    # 6. Two groups with different quantizers and one code table per group.
    rng = np.random.default_rng(20240006)
    s = Spec(tables="per_group")
    g0 = s.group(16, 1.0)
    g1 = s.group(1500, 5.0)
    s.plain("a", laplace_symbols(rng, (3, 5), 16, 1.0, 0.2), g0)
    s.plain("b", laplace_symbols(rng, (7,), 1500, 5.0, 0.5), g1)
    s.plain("c", np.array(9, dtype=np.uint16), g0)   # a 0-d (scalar) parameter
    v["per_group"] = s

    # 7. A small architecture section (the ONNX graph above) with its parameter.
    rng = np.random.default_rng(20240007)
    s = Spec()
    s.metadata("producer", "adt format vectors")
    s.architecture(TINY_ONNX)
    g = s.group(512, 3.0)
    s.plain("w", laplace_symbols(rng, (4,), 512, 3.0, 0.5), g)
    v["arch"] = s

    # 8. A tensor-train weight (format 2.0): shape (4, 6) reshaped (2, 2, 2, 3), ranks (2, 3, 2), and a
    #    plain bias. Q = 512, b = 3: every value is a multiple of 3/256, so the float64 products and
    #    sums of the rebuild are exact whatever their order and the expected weight is exact too.
    rng = np.random.default_rng(20240008)
    s = Spec()
    g = s.group(512, 3.0)
    dims = [(1, 2, 2), (2, 2, 3), (3, 2, 2), (2, 3, 1)]
    s.tt("fc.weight", (4, 6), [laplace_symbols(rng, d, 512, 3.0, 0.6) for d in dims], g)
    s.plain("fc.bias", laplace_symbols(rng, (4,), 512, 3.0, 0.1), g)
    v["tt"] = s
    return v


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz with fixed timestamps and order, so regenerating gives identical bytes."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            item = io.BytesIO()
            np.save(item, arrays[key], allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0)), item.getvalue())
    return buf.getvalue()


def outputs() -> dict[str, bytes]:
    """File name -> bytes for every vector."""
    files: dict[str, bytes] = {}
    for name, spec in build().items():
        data = spec.w.to_bytes()
        files[f"{name}.adt"] = data
        files[f"{name}.npz"] = npz_bytes(spec.arrays())
        files[f"{name}.json"] = (json.dumps(spec.description(data), indent=1) + "\n").encode()
    return files


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare with the committed files instead of writing")
    args = ap.parse_args(argv)
    from adt.runtime.format import write_atomic

    bad = 0
    for fname, data in outputs().items():
        path = HERE / fname
        if args.check:
            if not path.exists() or path.read_bytes() != data:
                print(f"differs: {fname}")
                bad += 1
        else:
            write_atomic(path, data)
            print(f"{fname:24s} {len(data):6d} bytes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
