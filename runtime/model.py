"""``load(path_or_bytes) -> Model``: decode a .adt file, rebuild its weights, and run it."""
from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from math import prod

import numpy as np

from .errors import AdtBudgetError, AdtEngineError, AdtExecutionError, AdtInputError, AdtNoArchitectureError
from .format import AdtArchitectureError, AdtFile, AdtReadError, read_adt, write_atomic
from .onnx_proto import DTYPE_NAMES, DTYPES, OnnxModel, ValueInfo, add_initializers, parse_model
from .preprocess import INPUT_KEY, AdtPreprocessError, InputConvention, read_convention, read_labels
from .preprocess import top_k as _top_k
from .rebuild import DEFAULT_MAX_MEMORY, _check_limit, _iter_weights, format_bytes

__all__ = ["ENGINES", "Model", "Weights", "load"]

ENGINES = ("numpy", "onnxruntime")
Source = AdtFile | bytes | bytearray | memoryview | str | os.PathLike


class Weights(Mapping):
    """``Model.weights``: every parameter of the file as a read-only float32 array of its stored shape,
    by tensor-table name, in table order.

    The weights are held once. The NumPy engine's load-time rewrites (a BatchNorm folded into the
    conv before it, a conv weight packed for its kernel) REPLACE a weight in the engine rather than
    keep both; such a weight is rebuilt again from the file when it is read here (each time: nothing
    is cached, so reading it costs its memory only while the caller holds it). :meth:`values` and
    :meth:`items` rebuild all of those in one pass over the file."""

    def __init__(self, model: "Model"):
        self._model = model

    def __getitem__(self, name: str) -> np.ndarray:
        kept = self._model._kept
        if name in kept:
            return kept[name]
        if name not in self._model._names:
            raise KeyError(name)
        return self._model._rebuild_again({name})[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._model._names)

    def __len__(self) -> int:
        return len(self._model._names)

    def __contains__(self, name) -> bool:
        return name in self._model._names

    def items(self) -> list[tuple[str, np.ndarray]]:  # type: ignore[override]
        """``(name, weight)`` in table order (replaced weights rebuilt in one pass)."""
        kept = self._model._kept
        again = self._model._rebuild_again({n for n in self._model._names if n not in kept})
        return [(n, kept[n] if n in kept else again[n]) for n in self._model._names]

    def values(self) -> list[np.ndarray]:  # type: ignore[override]
        """The weights in table order (replaced weights rebuilt in one pass)."""
        return [w for _, w in self.items()]

    def __repr__(self) -> str:
        return f"<adt Weights: {len(self)} weights>"


class Model:
    """A decoded .adt model: its file, its rebuilt float32 weights and an engine to run it.

    ``model.run(x)`` (or ``model(x)``) takes a float32 batch ``[N, ...]`` for the graph input (or a
    dict ``{name: array}``) and returns the output array (a dict when the graph has several outputs).
    ``max_memory``: see :func:`load`. ``model.weights``: a read-only mapping name -> float32 array
    (:class:`Weights`).

    Raw samples: ``model.predict(raw)`` (or ``model.preprocess(raw)`` then ``run``) applies the input
    convention the file stores (:attr:`input_convention`, FORMAT.md §4.1) and returns class indices,
    or the class names of :attr:`labels` when the file stores them. A malformed convention or label
    list fails the load (:class:`~adt.runtime.preprocess.AdtPreprocessError`).

    Memory: every weight is held once. :func:`load` reads the file itself (a path or bytes) and passes
    ``release_symbols=True`` with ``source``: the decoded symbols of ``file`` (each plain parameter's
    and core's ``symbols`` become None) are dropped as soon as their weights are rebuilt, and the
    NumPy engine takes the weights over (``own_weights``): a weight its rewrites replace is rebuilt
    again from ``source`` when :attr:`weights` is read. Built from an :class:`AdtFile` (symbols kept),
    that file is the source. ``source`` must not change while the model is in use: a path's size,
    modification time and inode are checked when it is read again.
    """

    def __init__(self, file: AdtFile, engine: str | None = "numpy", max_memory: int | None = DEFAULT_MAX_MEMORY,
                 run_timeout: float | None = None, *, release_symbols: bool = False,
                 source: "bytes | str | os.PathLike | None" = None):
        if engine is not None and engine not in ENGINES:
            raise AdtEngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
        self.file = file
        self.engine = engine
        self.max_memory = _check_limit(max_memory)
        self.architecture: OnnxModel | None = None
        self.inputs: list[ValueInfo] = []
        self.output_names: list[str] = []
        self._runner = None
        self._order: list[int] | None = None
        # where a weight the engine replaced is rebuilt from again (None: nowhere, so keep them all)
        self._source = (source, _stamp(source)) if release_symbols and source is not None else \
            (None if release_symbols else (file, None))
        self._names = {p.name: None for p in file.params}   # table order (a dict: fast membership)
        # parsed once, before the rebuild: a malformed entry fails fast (it would give wrong answers later)
        self.input_convention: InputConvention | None = read_convention(file.metadata)
        self.labels: list[str] | None = read_labels(file.metadata)
        if file.architecture is not None:  # checked before the (costlier) rebuild: fail fast
            self._read_architecture(file.architecture, list(self._names))
        self._kept: dict[str, np.ndarray] = {}
        for name, w in _iter_weights(file, max_memory, release_symbols):  # AdtBudgetError before anything is rebuilt
            # read-only: both engines use these very arrays (onnxruntime without a copy), so an
            # in-place edit would silently change the model; copy a weight to experiment with it
            w = np.asarray(w)  # a 0-d weight stays a 0-d array (a NumPy scalar has no settable flags)
            w.flags.writeable = False
            self._kept[name] = w
        if file.architecture is None or engine is None:  # engine=None: weights (+ dense ONNX) only
            return
        try:
            if engine == "numpy":
                from .numpy_engine import NumpyEngine
                # handed over: a weight the rewrites replace leaves self._kept (never two copies of it)
                self._runner = NumpyEngine(self.architecture, self._kept, order=self._order, max_memory=max_memory,
                                           own_weights=self._source is not None)
            else:
                from .ort_engine import OrtEngine
                self._runner = OrtEngine(self.architecture, self._used_weights(), self.output_names,
                                         order=self._order, run_timeout=run_timeout)
        except MemoryError:  # the work fits max_memory but not this machine's free memory
            raise AdtBudgetError(f"out of memory while preparing the {engine} engine (the weights take "
                                 f"{format_bytes(file.original_float32_bytes())}): this machine has less free "
                                 "memory than max_memory allows") from None

    @property
    def weights(self) -> Weights:
        """Every stored parameter, rebuilt: a read-only mapping name -> float32 array (:class:`Weights`)."""
        return Weights(self)

    def _rebuild_again(self, names: set[str]) -> dict[str, np.ndarray]:
        """The weights ``names`` (replaced in the engine), rebuilt again from the model's source."""
        if not names:
            return {}
        source, stamp = self._source
        if source is None:  # unreachable: the engine only takes weights over when there is a source
            raise AdtEngineError(f"weight {sorted(names)[0]!r} is no longer held and the file it came from is unknown")
        if isinstance(source, AdtFile):
            f = source
        else:
            if stamp is not None and _stamp(source) != stamp:
                raise AdtReadError(f"{os.fspath(source)!r} changed since the model was loaded: the weights the "
                                   "NumPy engine replaced at load cannot be rebuilt from it again")
            f = read_adt(source)
        out = {}
        for name, w in _iter_weights(f, self.max_memory, release=not isinstance(source, AdtFile), only=names):
            w.flags.writeable = False
            out[name] = w
        return out

    def _read_architecture(self, data: bytes, weight_names: list[str]) -> None:
        self.architecture = parse_model(data)
        g = self.architecture.graph
        clash = sorted(set(weight_names) & {t.name for t in g.initializers})
        if clash:
            raise AdtArchitectureError(
                f"architecture: {clash[0]!r} is both a graph initializer and a stored weight "
                "(the contract keeps stored parameters out of graph.initializer)")
        consts = set(weight_names) | {t.name for t in g.initializers}
        self.inputs = [vi for vi in g.inputs if vi.name not in consts]
        self.output_names = [vi.name for vi in g.outputs]
        if not self.inputs:
            raise AdtArchitectureError("architecture: the graph has no input that the weights do not supply")
        if not self.output_names:
            raise AdtArchitectureError("architecture: the graph has no outputs")
        # the graph's structure, once, for every engine (AdtGraphError names the node and the tensor)
        from .numpy_engine import validate_graph
        self._order = validate_graph(g, weight_names)
        if self.engine == "onnxruntime":  # its op rules, before the (costlier) rebuild: fail fast
            from .ort_engine import check_ops
            check_ops(self.architecture)

    # -- description --------------------------------------------------------------------------
    @property
    def input_name(self) -> str | None:
        return self.inputs[0].name if self.inputs else None

    @property
    def input_shape(self) -> list[int | str | None] | None:
        """Dims of the (first) graph input: ints, or the symbolic name (``"N"``) of a dynamic dim."""
        return None if not self.inputs or self.inputs[0].shape is None else list(self.inputs[0].shape)

    @property
    def input_dtype(self) -> np.dtype | None:
        et = self.inputs[0].elem_type if self.inputs else None
        return DTYPES.get(et) if et is not None else None

    def __repr__(self) -> str:
        arch = f"input {self.input_name!r} {self.input_shape}" if self.inputs else "no architecture"
        return f"<adt Model: {len(self._names)} weights, {arch}, engine {self.engine!r}>"

    # -- running ------------------------------------------------------------------------------
    def _check(self, vi: ValueInfo, x) -> np.ndarray:
        if not isinstance(x, np.ndarray):
            raise AdtInputError(f"input {vi.name!r} must be a NumPy array, got {type(x).__name__}")
        want = DTYPES.get(vi.elem_type) if vi.elem_type is not None else None
        if want is not None and x.dtype.newbyteorder("=") == want.newbyteorder("=") and not x.dtype.isnative:
            x = x.astype(want.newbyteorder("="))  # e.g. big-endian float32 read from a file
        if want is not None and x.dtype != want.newbyteorder("="):
            raise AdtInputError(
                f"input {vi.name!r} has dtype {x.dtype}, expected {DTYPE_NAMES.get(vi.elem_type, want)} "
                f"(convert with x.astype(np.{want.newbyteorder('=').name}))")
        if vi.shape is not None:
            if x.ndim != len(vi.shape):
                raise AdtInputError(
                    f"input {vi.name!r} has shape {list(x.shape)} (rank {x.ndim}), expected rank {len(vi.shape)}: "
                    f"{_fmt_shape(vi.shape)}")
            for i, (got, want_dim) in enumerate(zip(x.shape, vi.shape)):
                if isinstance(want_dim, int) and want_dim > 0 and got != want_dim:
                    raise AdtInputError(
                        f"input {vi.name!r} has shape {list(x.shape)}, expected {_fmt_shape(vi.shape)} "
                        f"(dim {i} is {got}, must be {want_dim})")
                if got < 1:
                    raise AdtInputError(f"input {vi.name!r} has shape {list(x.shape)}: dim {i} is empty")
        limit = self.max_memory
        if limit is not None and x.size and prod(x.shape) * x.dtype.itemsize > limit:  # before any copy
            raise AdtBudgetError(
                f"input {vi.name!r} of shape {list(x.shape)} ({x.dtype}) takes "
                f"{format_bytes(prod(x.shape) * x.dtype.itemsize)}, over the limit max_memory={format_bytes(limit)}")
        return np.ascontiguousarray(x)

    def run(self, x: np.ndarray | Mapping[str, np.ndarray]):
        """Outputs for the batch ``x`` (see the class doc)."""
        try:
            return self._run(x)
        except MemoryError:  # the engines type their own; this is the net under both (and the input copy)
            raise AdtExecutionError("out of memory while running the model (the input and every intermediate fit "
                                    "max_memory, not this machine's free memory)") from None

    def _run(self, x):
        if self.architecture is None:
            raise AdtNoArchitectureError(
                "this .adt file has no architecture section: its weights can be read (Model.weights) "
                "but it cannot be run")
        if self._runner is None:
            raise AdtEngineError("this model was loaded with engine=None: load it with engine='numpy' or "
                                 "'onnxruntime' to run it")
        if isinstance(x, Mapping):
            names = {vi.name for vi in self.inputs}
            if set(x) != names:
                raise AdtInputError(f"inputs {sorted(x)} given, the model expects {sorted(names)}")
            feeds = {vi.name: self._check(vi, x[vi.name]) for vi in self.inputs}
        else:
            if len(self.inputs) != 1:
                raise AdtInputError(
                    f"the model has {len(self.inputs)} inputs {[vi.name for vi in self.inputs]}: pass a dict")
            feeds = {self.inputs[0].name: self._check(self.inputs[0], x)}
        outs = self._runner.run(feeds)
        if len(outs) == 1:
            return outs[0]
        return dict(zip(self.output_names, outs))

    __call__ = run

    # -- raw samples --------------------------------------------------------------------------
    def preprocess(self, raw: np.ndarray, convention: InputConvention | None = None) -> np.ndarray:
        """The model input for the raw batch ``raw`` [N, *convention.shape]: the file's input convention
        (or ``convention``, e.g. ``InputConvention.mnist()`` for a file that stores none) applied, and
        flattened to [N, features] when the graph takes flat vectors."""
        conv = convention if convention is not None else self.input_convention
        if conv is None:
            raise AdtPreprocessError(
                f"this .adt file stores no input convention (metadata {INPUT_KEY!r}): pass model-ready float32 "
                "input to Model.run, or name the convention: preprocess(raw, convention=InputConvention.mnist())")
        x = conv.apply(raw)
        if len(self.input_shape or []) == 2 and x.ndim > 2:  # an MLP exported without a Flatten node
            x = x.reshape(len(x), -1)
        return x

    def predict(self, raw: np.ndarray, top_k: int = 1, batch_size: int = 256,
                convention: InputConvention | None = None) -> np.ndarray:
        """Classes of the raw batch ``raw`` (see :meth:`preprocess`): int64 indices [N] (``top_k=1``) or
        [N, top_k] (most likely first), or the class names (a str array of that shape) when the file
        stores :attr:`labels`. The output must be [N, classes]; run ``batch_size`` samples at a time."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise AdtInputError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        x = self.preprocess(raw, convention)
        if len(x) == 0:
            raise AdtInputError("predict: the batch is empty")
        outs = []
        for i in range(0, len(x), batch_size):
            out = self.run(x[i:i + batch_size])
            if not isinstance(out, np.ndarray) or out.ndim != 2:
                shape = list(out.shape) if isinstance(out, np.ndarray) else f"{len(out)} outputs"
                raise AdtInputError(f"predict needs one output [N, classes]; the model gives {shape}")
            outs.append(out)
        out = np.concatenate(outs)
        if self.labels is not None and len(self.labels) != out.shape[1]:
            raise AdtPreprocessError(f"the file stores {len(self.labels)} labels but the model outputs "
                                     f"{out.shape[1]} classes")
        idx, _ = _top_k(out, top_k)
        if top_k == 1:
            idx = idx[:, 0]
        return np.asarray(self.labels)[idx] if self.labels is not None else idx

    # -- dense ONNX ---------------------------------------------------------------------------
    def onnx_bytes(self) -> bytes:
        """The dense ONNX model: the stored architecture with every weight the graph reads added as
        a float32 initializer (in tensor-table order, so the same file gives the same bytes)."""
        if self.architecture is None:
            raise AdtNoArchitectureError("this .adt file has no architecture section: there is no model to write")
        return add_initializers(self.file.architecture, self._used_weights())

    def _used_weights(self) -> dict[str, np.ndarray]:
        """The weights some node reads, in tensor-table order (unused ones would only make
        onnxruntime warn)."""
        used = {n for node in self.architecture.graph.nodes for n in node.inputs}
        return {k: v for k, v in self.weights.items() if k in used}  # replaced ones rebuilt in one pass

    def to_onnx(self, path: str | os.PathLike) -> int:
        """Write :meth:`onnx_bytes` to ``path`` atomically; returns the number of bytes."""
        data = self.onnx_bytes()
        write_atomic(path, data)
        return len(data)


def _stamp(source) -> tuple | None:
    """(size, mtime, inode, device) of a path source (None for bytes): a file replaced or rewritten
    after the load is refused when weights are rebuilt from it again."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return None
    try:
        st = os.stat(source)
    except OSError:
        return None   # read_adt names the problem
    return st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev


def _fmt_shape(shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def load(source: Source, engine: str | None = "numpy", max_memory: int | None = DEFAULT_MAX_MEMORY,
         run_timeout: float | None = None) -> Model:
    """Read, verify and decode a .adt file (path, bytes or an :class:`AdtFile`), rebuild its weights
    and prepare ``engine`` ("numpy": NumPy only; "onnxruntime": needs onnxruntime; None: no engine,
    for the weights and the dense ONNX model only).

    The graph is validated once, here (:class:`~adt.runtime.errors.AdtGraphError` names the node
    and the tensor).

    ``max_memory`` (bytes; default ``DEFAULT_MAX_MEMORY`` = 256 MiB, sized for a 512 MiB board;
    ``None``: no limit; ``adt run/verify --max-memory SIZE``) is one limit checked, before the work, at
    three points. Over it, :class:`~adt.runtime.errors.AdtBudgetError` names the parameter or node,
    the shape, the figure and the limit.

    - **Rebuild** (at load): the peak of every rebuilt float32 weight kept plus the temporaries of the
      parameter being rebuilt (its float64 mode-product intermediates, chunked for large layers, see
      :mod:`adt.runtime.rebuild`), computed from the validated tensor table before anything is
      rebuilt. A ResNet-18-sized file stays under half the default (tests/runtime/test_rebuild_budget.py);
      Wide-ResNet-28-10 (36.5M weights, 139.2 MiB as float32) needs 143 MiB, and its load plus first
      batch-1 run peaks at about 1.05x its float32 weights (results/memory.md).
    - **Constant folding** (at load, NumPy engine): before each constant node is evaluated, its output
      shapes are inferred; each output, and every folded constant so far plus this node's outputs and
      work space, must fit.
    - **Running** (``Model.run``, NumPy engine): the input itself must fit (checked before it is
      copied); then every intermediate shape is inferred from the graph and the input shapes (batch
      included, cached per shape) and each intermediate alone, and the peak of the live ones under the
      engine's free-after-last-use schedule (inputs included, plus the running op's work space: Conv's
      and pooling's padded copy and Conv's im2col columns, Softmax/Sigmoid temporaries), must fit. A
      shape that depends on data (a Reshape target computed from an input) is inferred at run time,
      just before its op runs. The weights and folded constants are not counted again here. Shapes that
      do not fit raise :class:`~adt.runtime.errors.AdtExecutionError` naming the node, before the run.
      LeNet-5 with a batch of 256 peaks at 19.69 MiB (tests/runtime/test_engine_budget.py).

    With ``engine="onnxruntime"`` only the rebuild and the input size are checked; its graph must use
    only ops the NumPy engine runs (no control flow), and ``run_timeout`` (seconds; None: none) stops a
    run between two nodes with :class:`~adt.runtime.errors.AdtExecutionError`."""
    if engine is not None and engine not in ENGINES:
        raise AdtEngineError(f"unknown engine {engine!r}; choose one of {', '.join(ENGINES)}")
    if isinstance(source, AdtFile):
        return Model(source, engine, max_memory, run_timeout)
    if isinstance(source, (bytearray, memoryview)):
        source = bytes(source)   # the caller may change a mutable buffer; weights may be rebuilt from it again
    # the file is this model's alone: its decoded symbols are dropped as the weights are rebuilt
    # (Model.file keeps the tables, metadata and architecture)
    return Model(read_adt(source), engine, max_memory, run_timeout, release_symbols=True, source=source)
