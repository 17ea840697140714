"""The onnxruntime engine: the dense ONNX model (architecture + rebuilt weights as initializers) run
by ``onnxruntime.InferenceSession``. onnxruntime is imported only when this engine is chosen; the
model is assembled at the protobuf wire level (:mod:`adt.runtime.onnx_proto`), so the ``onnx``
package is not needed.

The weights do not go through protobuf at all: the graph gets EXTERNAL placeholders and the rebuilt
arrays are handed over as OrtValues (``add_external_initializers``, zero-copy), which makes session
creation faster than loading the equivalent dense .onnx file. Should an onnxruntime build refuse
that, the engine falls back to the serialized dense model (:meth:`Model.onnx_bytes`).

The same rules as the NumPy engine (issue 17):

* **Ops.** Before onnxruntime sees the graph, every node must be one the NumPy engine runs: an op of
  the default domain in :data:`adt.runtime.numpy_engine.OPS`, with attributes that engine accepts
  (its op factories are asked, so an unsupported ``auto_pad``, a MaxPool ``Indices`` output or a
  training-mode BatchNormalization is refused here too). Anything else raises the NumPy engine's
  :class:`~adt.runtime.errors.AdtUnsupportedOpError` at load. Control flow (``Loop``, ``If``,
  ``Scan``) and subgraph attributes are refused by name: their cost cannot be bounded before they
  run (a ``Loop`` with trip count 2**62 never returns). Ops allowed beyond the NumPy engine's:
  :data:`EXTRA_OPS`, none.
* **What onnxruntime runs is what adt checked.** onnxruntime gets the graph re-encoded from the
  parsed :class:`~adt.runtime.onnx_proto.OnnxModel` (:func:`~adt.runtime.onnx_proto.encode_model`),
  not the file's bytes: a field adt's parser skips (model-local functions, doc strings,
  ``value_info``) or a repeated field protobuf would merge cannot make onnxruntime run something
  else. Nodes without a (unique) name get one (``adt#<index>``) so that a failure names the node.
* **Run timeout.** onnxruntime has no run timeout, but ``RunOptions.terminate`` stops a run between
  two nodes. ``run_timeout`` (seconds; ``None``: no limit) starts a watchdog timer that sets it; a
  run stopped that way raises :class:`~adt.runtime.errors.AdtExecutionError`. A single long node
  finishes before the flag is seen (``terminate`` is checked between nodes).
* **Errors.** A failure while loading or running is an ``AdtExecutionError`` naming the node
  (op, name, index) and onnxruntime's own reason, never onnxruntime's exception types.
* **Logging.** onnxruntime's own log lines go to the Python logger ``adt.runtime.ort_engine``
  (through ``onnxruntime.set_default_logger_callback``, onnxruntime >= 1.32), which has only a
  ``NullHandler``: an application that configures logging sees them, nothing reaches stderr by
  itself. Sessions and runs log at severity 3 (errors) then; with an onnxruntime without the callback
  API at 4 (fatal only), so that no ``[E:onnxruntime...]`` line is printed. The callback is
  process-wide (it also takes the messages of other onnxruntime sessions of the process);
  :func:`configure_logging` changes the severity or restores onnxruntime's own stderr sink. The
  ``adt`` command line sets severity 4: its one-line error is the only thing on stderr.
"""
from __future__ import annotations

import logging
import re
import threading
from typing import Mapping, Sequence

import numpy as np

from .errors import AdtEngineError, AdtExecutionError, AdtUnsupportedOpError
from .format.errors import AdtArchitectureError, AdtError
from .onnx_proto import A_GRAPH, Graph, Node, OnnxModel, add_initializers, encode_model, parse_model

__all__ = ["CONTROL_FLOW_OPS", "EXTRA_OPS", "LOGGER", "OrtEngine", "check_ops", "configure_logging",
           "configure_threads", "session_options"]

#: Ops the onnxruntime engine runs beyond the NumPy engine's :data:`~adt.runtime.numpy_engine.OPS`:
#: none. (An op added here needs a stated reason: its cost must be bounded by its input shapes, as
#: every NumPy-engine op's is.)
EXTRA_OPS: frozenset[str] = frozenset()

#: Refused by name, with the reason: a subgraph's cost (trip count, recursion) is not bounded by
#: the shapes adt checks at load.
CONTROL_FLOW_OPS: frozenset[str] = frozenset({"Loop", "If", "Scan"})

#: Where onnxruntime's own log lines go (see the module doc). Only a NullHandler: the library never
#: prints; an application that configures logging sees them.
LOGGER = logging.getLogger(__name__)
LOGGER.addHandler(logging.NullHandler())

_ORT_TO_PY = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR, 4: logging.CRITICAL}
_log_lock = threading.Lock()
_log_wanted: dict = {"severity": None, "route": True}   # set by configure_logging
_log_state: dict = {"applied": False, "severity": 4}      # what is in force in this process


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise AdtEngineError(
            f"the onnxruntime engine needs the onnxruntime package ({exc}); pip install 'adt[onnx]' "
            "or use engine='numpy'") from None
    if not _log_state["applied"]:
        _apply_logging(onnxruntime)
    return onnxruntime


# -- logging -----------------------------------------------------------------------------------------
def _forward(severity, category, logid, code_location, message) -> None:
    """onnxruntime's logging callback: one record on :data:`LOGGER` (never raises)."""
    try:
        LOGGER.log(_ORT_TO_PY.get(int(severity), logging.ERROR), "[%s] %s: %s",
                   f"{category} {logid}" if logid else category, code_location, message)
    except Exception:  # a logging failure must not become an onnxruntime failure
        pass


def _apply_logging(ort) -> None:
    with _log_lock:
        route = bool(_log_wanted["route"])
        install = getattr(ort, "set_default_logger_callback", None)
        routed = route and install is not None
        severity = _log_wanted["severity"]
        if severity is None:  # routed: errors go to the Python logger; otherwise only fatal prints
            severity = 3 if routed else 4
        try:
            if routed:
                install(_forward, severity)
            else:
                if install is not None and _log_state["applied"]:
                    install(None, severity)  # back to onnxruntime's own (stderr) sink
                ort.set_default_logger_severity(severity)
        except Exception:  # e.g. a build without a Python-created environment: keep its defaults
            LOGGER.debug("could not configure onnxruntime logging", exc_info=True)
        _log_state.update(applied=True, severity=severity)


def configure_logging(severity: int | None = None, route: bool = True) -> None:
    """How onnxruntime logs, for this process: ``severity`` 0 (verbose) .. 4 (fatal) is the lowest
    severity it reports (``None``: 3 when routed, 4 otherwise); ``route``: send its messages to
    :data:`LOGGER` when the installed onnxruntime allows it (``False``: onnxruntime's own stderr
    sink). Applies at once if onnxruntime is already in use, else when the engine first imports it;
    sessions created afterwards use the same severity."""
    if severity is not None and severity not in _ORT_TO_PY:
        raise ValueError(f"severity must be 0..4, got {severity!r}")
    with _log_lock:
        _log_wanted.update(severity=severity, route=route)
        applied = _log_state["applied"]
    if applied:
        import onnxruntime
        _apply_logging(onnxruntime)


_threads: dict = {"intra": None, "inter": None}   # set by configure_threads (None: onnxruntime's default)


def configure_threads(intra: int | None = None, inter: int | None = None) -> None:
    """Thread pools of the sessions this engine creates from now on, for this process: ``intra``
    (intra-op threads) and ``inter`` (inter-op threads); ``None``: onnxruntime's default (one
    intra-op thread per core). Sessions already created keep theirs. ``adt bench --threads N`` uses
    it for the engine and the dense baseline alike."""
    for name, n in (("intra", intra), ("inter", inter)):
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
            raise ValueError(f"{name} must be a positive number of threads or None, got {n!r}")
    _threads.update(intra=intra, inter=inter)


def session_options():
    """The SessionOptions this engine uses (also used by ``adt bench`` for a fair dense baseline):
    onnxruntime's defaults (all graph optimizations), logging at the engine's severity, the thread
    pools of :func:`configure_threads`."""
    so = _ort().SessionOptions()
    so.log_severity_level = _log_state["severity"]
    if _threads["intra"] is not None:
        so.intra_op_num_threads = _threads["intra"]
    if _threads["inter"] is not None:
        so.inter_op_num_threads = _threads["inter"]
    return so


def _run_options(ort):
    ro = ort.RunOptions()
    ro.log_severity_level = _log_state["severity"]
    return ro


# -- the op rules --------------------------------------------------------------------------------------
def check_ops(model: OnnxModel, weights: Mapping[str, np.ndarray] | None = None) -> None:
    """Refuse, before onnxruntime sees the graph, every node the NumPy engine would refuse: an op of
    another domain, an op not in :data:`~adt.runtime.numpy_engine.OPS` (or :data:`EXTRA_OPS`),
    control flow, a subgraph attribute, or attributes the NumPy engine's op factory rejects.
    Raises :class:`AdtUnsupportedOpError` (or :class:`AdtArchitectureError` for invalid attributes),
    naming the node."""
    from .numpy_engine import OPS  # pure NumPy: no cost beyond the import
    g = model.graph
    opset = model.opset("")
    consts: dict[str, np.ndarray] = {t.name: t.array for t in g.initializers}
    consts.update(weights or {})
    for i, node in enumerate(g.nodes):
        where = f"{node.label()} (node #{i})"
        if node.domain not in ("", "ai.onnx"):
            raise AdtUnsupportedOpError(
                f"{where}: op {node.op_type!r} of domain {node.domain!r} is not supported by the NumPy engine, "
                "and the onnxruntime engine runs only what the NumPy engine runs")
        if node.op_type in CONTROL_FLOW_OPS:
            raise AdtUnsupportedOpError(
                f"{where}: control-flow op {node.op_type!r} is refused by both engines (the cost of a subgraph "
                "is not bounded by the shapes checked at load)")
        for a in node.attrs.values():
            if a.type == A_GRAPH:
                raise AdtUnsupportedOpError(f"{where}: attribute {a.name!r} is a subgraph; no engine runs subgraphs")
        factory = OPS.get(node.op_type)
        if factory is None:
            if node.op_type in EXTRA_OPS:
                continue
            raise AdtUnsupportedOpError(
                f"op {node.op_type!r} ({where}) is not supported by the NumPy engine, and the onnxruntime engine "
                f"runs only what the NumPy engine runs; supported ops: {', '.join(sorted(OPS))}")
        try:
            factory(node, opset, consts)  # the NumPy engine's attribute checks (no work is done)
        except AdtError:
            raise
        except (ValueError, IndexError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise AdtArchitectureError(f"{where}: invalid attributes: {exc}") from None


def _named_copy(model: OnnxModel) -> tuple[OnnxModel, dict[str, int]]:
    """``model`` with a unique name on every node (``adt#<index>`` where it has none or shares it),
    and ``{name: node index}``. Names only: onnxruntime computes the same thing."""
    counts: dict[str, int] = {}
    for n in model.graph.nodes:
        counts[n.name] = counts.get(n.name, 0) + 1
    taken = {name for name in counts if name}
    nodes, index = [], {}
    for i, n in enumerate(model.graph.nodes):
        name = n.name
        if not name or counts[name] > 1:
            name = f"adt#{i}"
            while name in taken:
                name += "_"
            taken.add(name)
            n = Node(op_type=n.op_type, name=name, domain=n.domain, inputs=n.inputs, outputs=n.outputs, attrs=n.attrs)
        nodes.append(n)
        index[name] = i
    g = model.graph
    graph = Graph(nodes=nodes, name=g.name, initializers=g.initializers, inputs=g.inputs, outputs=g.outputs)
    return OnnxModel(ir_version=model.ir_version, opsets=model.opsets, graph=graph,
                     producer_name=model.producer_name), index


# -- onnxruntime's errors ---------------------------------------------------------------------------
_NODE_FAIL = re.compile(r"running (\S+) node\. Name:'(.*?)' Status Message: (.*)", re.S)
# "path/file.h:91 function(args) condition was false. " or "file.h:59 Function ": where onnxruntime's code raised
_SOURCE_PREFIX = re.compile(r"^\S+\.(?:h|cc|cpp|hpp):\d+ (?:.*? was false\. |[\w:~<>]+ )", re.S)
_ORT_PREFIX = re.compile(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ")


class OrtEngine:
    """``run(feeds) -> outputs`` through an InferenceSession on the CPU provider.

    ``architecture``: the parsed :class:`OnnxModel` (or its bytes, parsed here). ``order``: what
    :func:`~adt.runtime.numpy_engine.validate_graph` returned for this graph and these weights (the
    loader validates once); without it the graph is validated here. ``run_timeout``: seconds after
    which a run is stopped (``None``: no limit); :meth:`run` can override it per call."""

    def __init__(self, architecture: bytes | OnnxModel, weights: Mapping[str, np.ndarray], output_names: list[str],
                 order: Sequence[int] | None = None, run_timeout: float | None = None):
        model = architecture if isinstance(architecture, OnnxModel) else parse_model(architecture)
        if order is None:
            from .numpy_engine import validate_graph
            validate_graph(model.graph, weights)
        check_ops(model, weights)  # before onnxruntime is imported or sees a byte
        ort = _ort()
        self.output_names = output_names
        self.run_timeout = run_timeout
        self._nodes = model.graph.nodes
        named, self._node_index = _named_copy(model)
        architecture = encode_model(named)
        self.external = True
        try:
            arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
            # the OrtValues share the arrays' memory: keep both alive as long as the session
            self._values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
            so = session_options()
            so.add_external_initializers(list(arrays), self._values)
            self.session = ort.InferenceSession(add_initializers(architecture, arrays, external=True),
                                                sess_options=so, providers=["CPUExecutionProvider"])
            self._arrays = arrays
            return
        except Exception:  # older onnxruntime, or a build that refuses in-memory external data
            self._values = []
            self.external = False
        try:
            self.session = ort.InferenceSession(add_initializers(architecture, weights), sess_options=session_options(),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise AdtExecutionError(f"onnxruntime cannot load the model: {self._reason(exc)}") from None

    def _reason(self, exc: BaseException) -> str:
        """onnxruntime's message, with the node it names given as adt names it (op, name, index)
        and without its source-file prefix."""
        text = _ORT_PREFIX.sub("", str(exc).strip())
        m = _NODE_FAIL.search(text)
        if m is None:
            return (text.splitlines() or [type(exc).__name__])[0]
        op, name, status = m.groups()
        i = self._node_index.get(name)
        status = _SOURCE_PREFIX.sub("", status.strip())
        status = (status.splitlines() or [""])[0]
        if i is not None and self._nodes[i].op_type == op:
            where = f"{self._nodes[i].label()} (node #{i})"
        else:  # a node onnxruntime made (a fusion) or renamed
            where = f"{op} node {name!r}"
        return f"{where}: {status}"

    def run(self, feeds: Mapping[str, np.ndarray], timeout=...) -> list[np.ndarray]:
        """The outputs for ``feeds``. ``timeout``: seconds (``None``: no limit; left out: the engine's
        ``run_timeout``); a run past it is stopped between two nodes and raises AdtExecutionError."""
        timeout = self.run_timeout if timeout is ... else timeout
        ort = _ort()
        ro = _run_options(ort)
        timer = fired = None
        if timeout is not None:
            fired = threading.Event()

            def stop():
                fired.set()
                ro.terminate = True
            timer = threading.Timer(max(0.0, float(timeout)), stop)
            timer.daemon = True
            timer.start()
        try:
            return self.session.run(self.output_names, dict(feeds), ro)
        except Exception as exc:
            if fired is not None and fired.is_set():
                raise AdtExecutionError(
                    f"onnxruntime run stopped: it ran past its {timeout:g} s timeout") from None
            raise AdtExecutionError(f"onnxruntime failed: {self._reason(exc)}") from None
        finally:
            if timer is not None:
                timer.cancel()
