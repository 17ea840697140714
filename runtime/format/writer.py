"""Build .adt files. The writer is a small state machine (GGUF-style): quantizer groups, then cores,
then parameters; metadata and the architecture any time before :meth:`AdtWriter.to_bytes`. Calls out
of that order raise :class:`AdtWriterError`. The same calls always produce the same bytes."""
from __future__ import annotations

import contextlib
import os
import re
import stat
import struct
import tempfile
import zlib
from dataclasses import dataclass
from enum import IntEnum
from math import prod
from pathlib import Path
from typing import Sequence

try:
    import fcntl
except ImportError:    # Windows
    fcntl = None

import numpy as np
from bitarray import bitarray

from . import limits as L
from .archdict import ONNX_DICT_V1
from .binary import encode_string, encode_varint
from .container import (
    ARCH_ONNX_DEFLATE, ARCH_ONNX_DEFLATE_DICT1, CORE_CP, CORE_TUCKER, ENC_PLAIN, ENC_TT, ENC_TUCKER,
    QUANT_EQ13, SECTION_ARCH, SECTION_CODES, SECTION_META, SECTION_PAYLOAD, SECTION_TENSORS, ArchFormat, CoreKind, Encoding,
    SectionKind,
)
from .errors import AdtError, AdtWriterError
from .huffman import HuffmanCode, encode_table
from .quantizer import check_quantizer

__all__ = ["TABLE_POLICIES", "AdtWriter", "WriterPhase", "write_atomic"]

TABLE_POLICIES = ("shared", "per_group", "auto")


class WriterPhase(IntEnum):
    """The writer's states, in the order the file's tensor table needs them; a call may stay in the
    current phase or move forward, never back."""

    GROUPS = 0
    CORES = 1
    PARAMS = 2
    DONE = 3

    @property
    def label(self) -> str:
        """The phase as error messages name it."""
        return _PHASE_LABELS[self]


_PHASE_LABELS = {WriterPhase.GROUPS: "groups", WriterPhase.CORES: "cores", WriterPhase.PARAMS: "parameters",
                 WriterPhase.DONE: "finished"}


@dataclass(frozen=True)
class _Group:
    q: int
    b: float           # already rounded to float32, as stored


@dataclass(frozen=True)
class _Core:
    kind: CoreKind
    dims: tuple[int, ...]
    group: int
    symbols: np.ndarray   # flattened (a CP core: its diagonal)


@dataclass(frozen=True)
class _Param:
    name: str
    shape: tuple[int, ...]
    encoding: Encoding
    group: int
    core: int | None
    arrays: list[np.ndarray]   # flattened: plain, one array; Tucker, the factors in mode order; TT, the cores
    reshape: tuple[int, ...] = ()   # TT only: (n_1..n_d)
    ranks: tuple[int, ...] = ()     # TT only: (r_1..r_{d-1})


@dataclass(frozen=True)
class _Stream:
    """Symbols of one group, in payload order."""

    group: int
    symbols: np.ndarray


def _symbols(arr: np.ndarray, what: str) -> np.ndarray:
    a = np.asarray(arr)
    if a.dtype.kind not in "ui":
        raise AdtWriterError(f"{what}: symbols must be integers, got dtype {a.dtype}")
    if a.size and (a.min() < 0 or a.max() >= L.MAX_Q):
        raise AdtWriterError(f"{what}: symbols must lie in 0..{L.MAX_Q - 1}, got {a.min()}..{a.max()}")
    return a.astype(np.uint16)


class AdtWriter:
    """Collects quantized arrays and writes one .adt file.

    >>> w = AdtWriter()
    >>> g = w.add_group(q=512, b=3.0)
    >>> c = w.add_core(core_symbols, group=g)
    >>> w.add_tucker("fc.weight", (500, 10), core=c, factors=[m1, m2], group=g)
    >>> w.write("model.adt")
    """

    def __init__(self, tables: str = "auto"):
        if tables not in TABLE_POLICIES:
            raise AdtWriterError(f"tables must be one of {TABLE_POLICIES}, got {tables!r}")
        self.table_policy = tables
        self._phase = WriterPhase.GROUPS
        self._meta: dict[str, str] = {}
        self._arch: bytes | None = None
        self._groups: list[_Group] = []
        self._cores: list[_Core] = []
        self._params: list[_Param] = []
        self._names: set[str] = set()
        self._total_elements = 0
        self.chosen_policy: str | None = None  # which table policy to_bytes() used
        self._result: bytes | None = None

    # -- state machine ---------------------------------------------------------------------------
    def _enter(self, phase: WriterPhase, call: str) -> None:
        if self._phase == WriterPhase.DONE:
            raise AdtWriterError(f"{call}: the file is already finished")
        if phase < self._phase:
            raise AdtWriterError(
                f"{call}: out of order, {phase.label} must be added before {self._phase.label}"
            )
        self._phase = phase

    def _check_group(self, group: int, what: str, symbols: Sequence[np.ndarray] = ()) -> None:
        """The group must exist and every symbol must be one of its Q levels (a reader rejects more)."""
        if not isinstance(group, (int, np.integer)) or not 0 <= group < len(self._groups):
            raise AdtWriterError(f"{what}: group {group!r} does not exist (have {len(self._groups)})")
        q = self._groups[group].q
        for s in symbols:
            if s.size and int(s.max()) >= q:
                raise AdtWriterError(f"{what}: symbol {int(s.max())} is out of range for group {group} (Q = {q}, symbols 0..{q - 1})")

    # -- content ---------------------------------------------------------------------------------
    def add_metadata(self, key: str, value: str) -> None:
        """A key/value string pair for tools to print (producer, model name, accuracy, ...)."""
        if self._phase == WriterPhase.DONE:
            raise AdtWriterError("add_metadata: the file is already finished")
        if not key or len(key.encode()) > L.MAX_META_KEY_BYTES:
            raise AdtWriterError(f"metadata key must be 1..{L.MAX_META_KEY_BYTES} UTF-8 bytes: {key!r}")
        if len(str(value).encode()) > L.MAX_META_VALUE_BYTES:
            raise AdtWriterError(f"metadata value of {key!r} exceeds {L.MAX_META_VALUE_BYTES} bytes")
        if key not in self._meta and len(self._meta) >= L.MAX_META_ENTRIES:
            raise AdtWriterError(f"more than {L.MAX_META_ENTRIES} metadata entries")
        self._meta[key] = str(value)

    def set_architecture(self, onnx_model: bytes) -> None:
        """The model's ONNX graph without weight initializers (stored DEFLATE-compressed, with the
        ADT-ONNX-1 preset dictionary when that is smaller)."""
        if self._phase == WriterPhase.DONE:
            raise AdtWriterError("set_architecture: the file is already finished")
        if len(onnx_model) > L.MAX_ARCH_BYTES:
            raise AdtWriterError(f"architecture is {len(onnx_model)} bytes, limit {L.MAX_ARCH_BYTES}")
        self._arch = bytes(onnx_model)

    def add_group(self, q: int, b: float) -> int:
        """A quantizer (Eq. 13 with Q levels and bound b); returns its index."""
        self._enter(WriterPhase.GROUPS, "add_group")
        try:
            check_quantizer(q, b)
        except AdtError as exc:
            raise AdtWriterError(f"add_group: {exc}") from None
        if len(self._groups) >= L.MAX_GROUPS:
            raise AdtWriterError(f"more than {L.MAX_GROUPS} groups")
        self._groups.append(_Group(int(q), float(np.float32(b))))
        return len(self._groups) - 1

    def add_core(self, symbols: np.ndarray, group: int, cp_order: int | None = None) -> int:
        """A Tucker core (``symbols`` has the core's shape), or with ``cp_order=d`` a CP core: a
        superdiagonal core of order d whose diagonal ``symbols`` (1-D, length r) is all that is stored."""
        self._enter(WriterPhase.CORES, "add_core")
        sym = _symbols(symbols, "add_core")
        self._check_group(group, "add_core", [sym])
        if cp_order is not None:
            if sym.ndim != 1 or sym.size < 1 or not 1 <= cp_order <= L.MAX_ORDER:
                raise AdtWriterError(f"add_core: a CP core needs a 1-D diagonal and order 1..{L.MAX_ORDER}")
            kind, dims = CORE_CP, (int(sym.size),) * cp_order
        else:
            if not 1 <= sym.ndim <= L.MAX_ORDER or sym.size == 0:
                raise AdtWriterError(f"add_core: core order must be 1..{L.MAX_ORDER} with no zero dims, got shape {sym.shape}")
            kind, dims = CORE_TUCKER, tuple(int(d) for d in sym.shape)
        if len(self._cores) >= L.MAX_CORES:
            raise AdtWriterError(f"more than {L.MAX_CORES} cores")
        self._cores.append(_Core(kind, dims, group, sym.reshape(-1)))
        return len(self._cores) - 1

    def _add_param(self, name: str, shape: Sequence[int], encoding: Encoding, group: int,
                   core: int | None, arrays: list[np.ndarray], reshape: tuple[int, ...] = (),
                   ranks: tuple[int, ...] = ()) -> None:
        self._enter(WriterPhase.PARAMS, "add parameter")
        self._check_group(group, f"parameter {name!r}", arrays)
        if not name or len(name.encode()) > L.MAX_NAME_BYTES:
            raise AdtWriterError(f"parameter name must be 1..{L.MAX_NAME_BYTES} UTF-8 bytes: {name!r}")
        if name in self._names:
            raise AdtWriterError(f"duplicate parameter name {name!r}")
        shape = tuple(int(d) for d in shape)
        if len(shape) > L.MAX_ORDER or any(not 1 <= d <= L.MAX_DIM for d in shape):
            raise AdtWriterError(f"parameter {name!r}: shape {shape} needs ndim <= {L.MAX_ORDER} and dims >= 1")
        numel = prod(shape)
        if numel > L.MAX_TENSOR_ELEMENTS or self._total_elements + numel > L.MAX_TOTAL_ELEMENTS:
            raise AdtWriterError(f"parameter {name!r}: {numel} elements exceed the format's limits")
        if len(self._params) >= L.MAX_PARAMS:
            raise AdtWriterError(f"more than {L.MAX_PARAMS} parameters")
        self._names.add(name)
        self._total_elements += numel
        self._params.append(_Param(name, shape, encoding, group, core, arrays, reshape, ranks))

    def add_plain(self, name: str, symbols: np.ndarray, group: int) -> None:
        """A parameter stored as quantized dense values; its shape is ``symbols.shape``."""
        sym = _symbols(symbols, f"parameter {name!r}")
        self._add_param(name, sym.shape, ENC_PLAIN, group, None, [sym.reshape(-1)])

    def add_tucker(self, name: str, shape: Sequence[int], core: int, factors: Sequence[np.ndarray],
                   group: int) -> None:
        """A parameter rebuilt as reshape(core x_1 M_1 ... x_d M_d, shape); factor i is an
        ``(n_i, k_i)`` symbol matrix, so the reshape dims are the factors' row counts."""
        if not 0 <= core < len(self._cores):
            raise AdtWriterError(f"parameter {name!r}: core {core} does not exist (have {len(self._cores)})")
        dims = self._cores[core].dims
        mats = [_symbols(f, f"parameter {name!r} factor {i}") for i, f in enumerate(factors)]
        if len(mats) != len(dims):
            raise AdtWriterError(f"parameter {name!r}: core {core} has order {len(dims)}, got {len(mats)} factors")
        for i, (m, k) in enumerate(zip(mats, dims)):
            if m.ndim != 2 or m.shape[1] != k or not 1 <= m.shape[0] <= L.MAX_DIM:
                raise AdtWriterError(f"parameter {name!r}: factor {i} must be (n_{i}, {k}), got {m.shape}")
        reshape = [m.shape[0] for m in mats]
        if prod(reshape) != prod(int(d) for d in shape):
            raise AdtWriterError(
                f"parameter {name!r}: reshape {tuple(reshape)} has {prod(reshape)} elements, shape {tuple(shape)} has {prod(shape)}"
            )
        self._add_param(name, shape, ENC_TUCKER, group, core, [m.reshape(-1) for m in mats])

    def add_tt(self, name: str, shape: Sequence[int], cores: Sequence[np.ndarray], group: int) -> None:
        """A parameter stored as a tensor train (format version 2.0): rebuilt as reshape(T, shape) with
        ``T[j_1..j_d] = G_1[0, j_1, :] G_2[:, j_2, :] ... G_d[:, j_d, 0]``. ``cores[k]`` is a 3-D
        ``(r_{k-1}, n_k, r_k)`` symbol array with ``r_0 = r_d = 1``, consecutive ranks matching and
        ``prod(n_k) == prod(shape)``, 1 <= d <= 8. A file with a TT parameter is written as version 2.0."""
        what = f"parameter {name!r}"
        mats = [_symbols(g, f"{what} TT core {k}") for k, g in enumerate(cores)]
        if not 1 <= len(mats) <= L.MAX_ORDER:
            raise AdtWriterError(f"{what}: a tensor train needs 1..{L.MAX_ORDER} cores, got {len(mats)}")
        prev = 1
        for k, g in enumerate(mats):
            if g.ndim != 3 or g.shape[0] != prev or not 1 <= g.shape[1] <= L.MAX_DIM or not 1 <= g.shape[2] <= L.MAX_DIM:
                raise AdtWriterError(
                    f"{what}: TT core {k} must be ({prev}, n_{k + 1}, r_{k + 1}) with n, r in 1..{L.MAX_DIM}, got {g.shape}")
            if g.size > L.MAX_TENSOR_ELEMENTS:
                raise AdtWriterError(f"{what}: TT core {k} has {g.size} values, limit {L.MAX_TENSOR_ELEMENTS}")
            prev = int(g.shape[2])
        if prev != 1:
            raise AdtWriterError(f"{what}: the last TT core must have rank 1 on its right, got {mats[-1].shape}")
        stored = sum(int(g.size) for g in mats)
        if stored > L.MAX_TENSOR_ELEMENTS:
            raise AdtWriterError(f"{what}: TT cores have {stored} values in all, limit {L.MAX_TENSOR_ELEMENTS}")
        reshape = tuple(int(g.shape[1]) for g in mats)
        ranks = tuple(int(g.shape[2]) for g in mats[:-1])
        if prod(reshape) != prod(int(d) for d in shape):
            raise AdtWriterError(
                f"{what}: TT reshape {reshape} has {prod(reshape)} elements, shape {tuple(shape)} has {prod(shape)}")
        self._add_param(name, shape, ENC_TT, group, None, [g.reshape(-1) for g in mats], reshape, ranks)

    # -- output ----------------------------------------------------------------------------------
    @property
    def version(self) -> tuple[int, int]:
        """The version the file is written as: the lowest that can hold it (FORMAT.md §13), so a
        file without TT parameters stays a 1.0 file that every 1.x reader reads."""
        if any(p.encoding == ENC_TT for p in self._params):
            return (L.TT_MIN_MAJOR, 0)
        return (L.BASE_MAJOR, 0)

    def _streams(self) -> list[_Stream]:
        """The symbol arrays in payload order: cores, then parameters (factors in mode order)."""
        out = [_Stream(c.group, c.symbols) for c in self._cores]
        for p in self._params:
            out.extend(_Stream(p.group, a) for a in p.arrays)
        return out

    def _codes(self, policy: str, streams: list[_Stream]) -> tuple[list[HuffmanCode], list[int]]:
        """Code tables and each group's table index under ``policy``."""
        used = sorted({st.group for st in streams if st.symbols.size})
        unused = [g for g in range(len(self._groups)) if g not in used]
        if unused:
            raise AdtWriterError(f"group {unused[0]} holds no values (every group needs at least one symbol)")
        if not used:
            return [], []
        if policy == "shared":
            counts = np.zeros(L.MAX_Q, dtype=np.int64)
            for st in streams:
                counts += np.bincount(st.symbols, minlength=L.MAX_Q)
            return [HuffmanCode.from_counts(counts)], [0] * len(self._groups)
        codes = []
        for g in range(len(self._groups)):
            counts = np.zeros(L.MAX_Q, dtype=np.int64)
            for st in streams:
                if st.group == g:
                    counts += np.bincount(st.symbols, minlength=L.MAX_Q)
            codes.append(HuffmanCode.from_counts(counts))
        return codes, list(range(len(self._groups)))

    def _build(self, policy: str) -> bytes:
        streams = self._streams()
        codes, group_table = self._codes(policy, streams)

        codes_body = encode_varint(len(codes)) + b"".join(encode_table(c.lengths) for c in codes)

        t = bytearray(encode_varint(len(self._groups)))
        for gi, grp in enumerate(self._groups):
            t += bytes([QUANT_EQ13]) + encode_varint(grp.q) + struct.pack("<f", grp.b) + encode_varint(group_table[gi])
        t += encode_varint(len(self._cores))
        for c in self._cores:
            t += bytes([c.kind]) + encode_varint(len(c.dims))
            t += encode_varint(c.dims[0]) if c.kind == CORE_CP else b"".join(encode_varint(k) for k in c.dims)
            t += encode_varint(c.group)
        t += encode_varint(len(self._params))
        for p in self._params:
            t += encode_string(p.name) + encode_varint(len(p.shape)) + b"".join(encode_varint(d) for d in p.shape)
            t += bytes([p.encoding]) + encode_varint(p.group)
            if p.encoding == ENC_TUCKER:
                t += encode_varint(p.core)
                reshape = [a.size // k for a, k in zip(p.arrays, self._cores[p.core].dims)]
                t += b"".join(encode_varint(n) for n in reshape)
            elif p.encoding == ENC_TT:
                t += encode_varint(len(p.reshape)) + b"".join(encode_varint(n) for n in p.reshape)
                t += b"".join(encode_varint(r) for r in p.ranks)

        bits = bitarray(endian="big")
        for st in streams:
            codes[group_table[st.group]].encode_into(bits, st.symbols)
        bits.fill()
        payload = bits.tobytes()
        if len(payload) > L.MAX_PAYLOAD_BYTES:
            raise AdtWriterError(f"payload of {len(payload)} bytes exceeds {L.MAX_PAYLOAD_BYTES}")

        sections: list[tuple[SectionKind, bytes]] = []  # (kind, body) in file order
        if self._meta:
            m = bytearray(encode_varint(len(self._meta)))
            for k, v in self._meta.items():
                m += encode_string(k) + encode_string(v)
            sections.append((SECTION_META, bytes(m)))
        if self._arch is not None:
            fmt, deflated = _compress_architecture(self._arch)
            sections.append((SECTION_ARCH, bytes([fmt]) + encode_varint(len(self._arch)) + deflated))
        sections += [(SECTION_CODES, codes_body), (SECTION_TENSORS, bytes(t)), (SECTION_PAYLOAD, payload)]

        out = bytearray(L.MAGIC + bytes(self.version))
        out += encode_varint(len(sections))
        for kind, body in sections:
            out += bytes([kind]) + encode_varint(len(body))
        for _, body in sections:
            out += body
        out += struct.pack("<I", zlib.crc32(out) & 0xFFFFFFFF)
        return bytes(out)

    def to_bytes(self) -> bytes:
        """Finish the file and return its bytes. With ``tables="auto"`` both table policies are
        built and the smaller file is kept (ties go to one shared table); with more than MAX_TABLES
        groups only the shared table is possible ("per_group" then raises AdtWriterError)."""
        if self._result is not None:
            return self._result
        # per_group needs one code table per group, and a file holds at most MAX_TABLES of them
        if self.table_policy == "per_group" and len(self._groups) > L.MAX_TABLES:
            raise AdtWriterError(
                f"tables='per_group': {len(self._groups)} groups need {len(self._groups)} code tables, a file "
                f"holds at most {L.MAX_TABLES}; use tables='shared' or 'auto'"
            )
        if self.table_policy == "auto":
            policies = ["shared", "per_group"] if len(self._groups) <= L.MAX_TABLES else ["shared"]
        else:
            policies = [self.table_policy]
        best = None
        for policy in policies:
            data = self._build(policy)
            if best is None or len(data) < len(best[1]):
                best = (policy, data)
        self.chosen_policy, self._result = best
        self._phase = WriterPhase.DONE
        return self._result

    def write(self, path: str | os.PathLike) -> int:
        """Write the file atomically (temporary file in the same folder, fsync, rename); return its size."""
        data = self.to_bytes()
        write_atomic(path, data)
        return len(data)


def _compress_architecture(onnx_model: bytes) -> tuple[ArchFormat, bytes]:
    """Raw DEFLATE (zlib level 9) without and with the ADT-ONNX-1 preset dictionary; the smaller wins
    (ties: no dictionary), so the choice is deterministic."""
    best: tuple[ArchFormat, bytes] | None = None
    for fmt, zdict in ((ARCH_ONNX_DEFLATE, None), (ARCH_ONNX_DEFLATE_DICT1, ONNX_DICT_V1)):
        comp = zlib.compressobj(9, zlib.DEFLATED, -15, 9, zdict=zdict) if zdict else zlib.compressobj(9, zlib.DEFLATED, -15, 9)
        data = comp.compress(onnx_model) + comp.flush()
        if best is None or len(data) < len(best[1]):
            best = (fmt, data)
    return best


def _target_mode(path: Path) -> int:
    """Permissions for the new file: an existing file's own, else what ``open()`` would give (0o666 & ~umask).

    ``mkstemp`` creates its file 0o600; without this every exported ``.adt`` would be private to its owner.
    """
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except FileNotFoundError:
        mask = os.umask(0)  # the only portable way to read the umask is to set it and put it back
        os.umask(mask)
        return 0o666 & ~mask


def write_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one.

    The bytes go to a temporary file ``.NAME.<pid>.<random>.tmp`` in the target's folder, which is
    fsynced and renamed over the target (``os.replace``): two writers to one target each rename a
    complete file and the last rename wins. A write killed before its rename leaves its temporary
    file behind; each later write to the same target removes those of writers that are gone (POSIX;
    elsewhere they stay, as before). FORMAT.md, "Writing a file"."""
    path = Path(path)
    folder = path.parent
    mode = _target_mode(path)
    _remove_stale_temporaries(folder, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            # held while written; a cleaner holding it this instant only looks (our pid is alive)
            _try_lock(f.fileno())
            os.chmod(tmp, mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
            if fcntl is None:
                f.close()   # Windows cannot rename a file that is open
            os.replace(tmp, path)   # POSIX: still open, so still locked, until renamed
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _try_lock(fd: int) -> bool:
    """Take the temporary file's advisory lock without waiting (the OS drops it when its holder exits
    or dies, so it also marks a writer in another PID namespace). False only when another process
    holds it; a file system without locks counts as free (the pid alone then decides)."""
    if fcntl is None:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _remove_stale_temporaries(folder: Path, name: str) -> None:
    """Delete ``.NAME.<pid>.<random>.tmp`` files of this target left by writers that are gone: the
    pid is not a live process here and no process holds the file's lock. Best effort: it never fails
    the write, and it leaves every other name alone (other targets' temporaries, foreign files)."""
    if os.name != "posix":
        return      # os.kill(pid, 0) would terminate the process on Windows
    pattern = re.compile(re.escape(f".{name}.") + r"([0-9]+)\.[A-Za-z0-9_]+\.tmp")
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            fd = os.open(entry.path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
        except OSError:
            continue
        try:
            if _try_lock(fd):   # not held by a live writer (e.g. one in another PID namespace)
                with contextlib.suppress(OSError):
                    os.unlink(entry.path)
        finally:
            os.close(fd)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True     # 0 and negative pids address process groups: never treat them as gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True     # exists but belongs to another user; or undecidable: keep the file
    return True
