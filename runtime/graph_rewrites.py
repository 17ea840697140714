"""Load-time inference rewrites for the NumPy engine: graph -> graph plus its constants, exact ONNX
semantics up to float32 rounding, the stored file unchanged.

Applied by :class:`adt.runtime.numpy_engine.NumpyEngine` to the nodes left after constant folding
(so Clip bounds from Constant nodes are known), in this order:

1. drop Identity and (inference-mode) Dropout nodes whose output is not a graph output: readers
   read the input instead;
2. fold a per-channel affine map into the Conv or Gemm before it when that node's output has no
   other reader and is no graph output, and the weight, bias and map parameters are constants: an
   inference BatchNormalization (``s = scale / sqrt(var + epsilon)``, ``t = bias - mean * s``, in
   float64 as the unfused op computes them) or a Mul / Add by a per-channel constant (how the
   exporter writes a BatchNorm); ``W' = W * s`` per output channel, ``b' = b * s + t`` (Gemm:
   ``beta * C * s + t`` with beta 1; alpha stays). The folded weight REPLACES the original: never both;
3. fuse into a 2-D Conv its chain ``[activation] -> [Add(residual)] -> [activation]`` (one
   activation at most; Relu, LeakyRelu, or Clip with constant scalar bounds, from inputs from
   opset 11 on and attributes before), the fused node running where the chain's last node ran so
   the residual is ready; fuse an activation after a Gemm;
4. pack a 2-D Conv's weight for the engine's NHWC kernels (:data:`CONV_OP`): (KH*KW*C, M) for group
   1, (KH, KW, C) for depthwise (group == C == M), (G, KH*KW*C/G, M/G) for other groups; a group-1
   weight of at least :data:`INPLACE_MIN_BYTES` that the engine may change is instead re-laid in its
   own memory as (M, KH, KW, C) (no second copy, not even for a moment). A weight read by other
   nodes too is left as it is.

``sources``: mappings the caller handed over (``NumpyEngine(own_weights=True)``): arrays found in
them may be changed in place, and a replaced weight is removed from them, so that no second copy
stays alive. Otherwise the caller's arrays are never written, and the new arrays count against
``budget`` (bytes: a rewrite that does not fit is skipped).
"""
from __future__ import annotations

from enum import IntEnum
from typing import Mapping, MutableMapping, Sequence

import numpy as np

from .onnx_proto import A_FLOAT, A_INT, A_INTS, A_STRING, Attribute, Node

__all__ = ["CONV_OP", "GEMM_OP", "INPLACE_MIN_BYTES", "INTERNAL_DOMAIN", "Packing", "rewrite"]

#: Domain of the engine's internal fused ops (never read from a file: the engine checks every
#: node of the stored graph against the public op table before it rewrites).
INTERNAL_DOMAIN = "adt.engine"
CONV_OP, GEMM_OP = "AdtConv", "AdtGemm"


class Packing(IntEnum):
    """How a fused conv's weight is laid out (the ``packing`` attribute of an AdtConv node)."""
    GEMM = 0        # (KH*KW*C, M): group 1, a copy
    DEPTHWISE = 1   # (KH, KW, C): group == C == M
    GROUPED = 2     # (G, KH*KW*C/G, M/G)
    OHWI = 3        # (M, KH, KW, C): group 1, re-laid in the weight's own memory, used transposed


def _attr(node: Node, name: str, kind: int, default):
    a = node.attrs.get(name)
    return default if a is None or a.type != kind else a.value


class _Graph:
    """The nodes being rewritten, with who reads each value."""

    def __init__(self, nodes: Sequence[Node], outputs: Sequence[str]):
        self.nodes: list[Node | None] = list(nodes)
        self.outputs = set(outputs)
        self.readers: dict[str, list[int]] = {}
        for i, n in enumerate(self.nodes):
            for name in n.inputs:
                if name:
                    self.readers.setdefault(name, []).append(i)

    def only_reader(self, value: str) -> int | None:
        """The index of the single node reading ``value`` once (None: several readers, a graph output)."""
        if value in self.outputs:
            return None
        r = self.live(value)
        if len(r) != 1:
            return None
        if self.nodes[r[0]].inputs.count(value) != 1:
            return None
        return r[0]

    def live(self, value: str) -> list[int]:
        """The nodes still in the graph that read ``value`` (dropped ones leave stale entries)."""
        return [k for k in self.readers.get(value, []) if self.nodes[k] is not None]

    def rename(self, old: str, new: str) -> None:
        for i in self.readers.pop(old, []):
            n = self.nodes[i]
            if n is not None:
                n.inputs = [new if v == old else v for v in n.inputs]
                self.readers.setdefault(new, []).append(i)


class _Consts:
    """The engine's constants plus the bookkeeping of replaced weights (see the module doc)."""

    def __init__(self, consts: MutableMapping[str, np.ndarray], sources: Sequence[MutableMapping], budget: int | None,
                 readers: Mapping[str, list[int]], names: set[str]):
        self.c, self.sources, self.budget, self.readers = consts, sources, budget, readers
        self.names = names  # every value name of the graph: a new constant's name must not clash
        self.graph: _Graph | None = None
        self.n = 0
        self.mine: set[str] = set()  # names of arrays the rewrites made (or took over): free to change

    def is_const(self, name: str) -> bool:
        return bool(name) and name in self.c

    def exclusive(self, name: str) -> bool:
        """Only one node reads this constant (so replacing it changes nothing else)."""
        return len(self.graph.live(name)) == 1

    def afford(self, nbytes: int) -> bool:
        """Count a new array of ``nbytes`` against the budget (False: it does not fit)."""
        if self.budget is None:
            return True
        if nbytes > self.budget:
            return False
        self.budget -= nbytes
        return True

    def owned(self, name: str) -> bool:
        """The caller handed this very array over (see ``own``): it may be changed in place."""
        a = self.c.get(name)
        return a is not None and (name in self.mine or any(s.get(name) is a for s in self.sources))

    def writable(self, name: str) -> np.ndarray | None:
        """The owned array made writeable (None: not owned, or its memory is read-only)."""
        if not self.owned(name):
            return None
        a = self.c[name]
        if not isinstance(a, np.ndarray):
            return None
        try:
            a.flags.writeable = True
        except ValueError:  # a view of read-only memory
            return None
        return a

    def scaled(self, name: str, factor: np.ndarray) -> np.ndarray:
        """``c[name] * factor`` in float32: in place on an owned array (no second copy), else new."""
        a = self.writable(name)
        if a is not None:
            np.multiply(a, factor, out=a)
            return a
        return (np.asarray(self.c[name]) * factor).astype(np.float32)

    def _fresh(self, hint: str) -> str:
        while True:
            self.n += 1
            new = f"{hint}::adt{self.n}"
            if new not in self.c and new not in self.names:
                self.names.add(new)
                return new

    def replace(self, old: str, arr: np.ndarray) -> str:
        """Store ``arr`` under a fresh name instead of ``old`` (dropped here and, when owned, from the
        sources); returns the new name."""
        new = self._fresh(old)
        self.c[new] = arr
        self.c.pop(old, None)
        self.mine.discard(old)
        self.mine.add(new)
        self.readers[new] = self.readers.pop(old, [])
        for s in self.sources:
            s.pop(old, None)
        return new

    def add(self, hint: str, arr: np.ndarray) -> str:
        new = self._fresh(hint)
        self.c[new] = arr
        self.mine.add(new)
        return new


def _drop_passthrough(g: _Graph) -> None:
    for i, n in enumerate(g.nodes):
        if n is None or n.domain not in ("", "ai.onnx") or n.op_type not in ("Identity", "Dropout"):
            continue
        outs = [o for o in n.outputs if o]
        if len(outs) != 1 or n.outputs[0] != outs[0] or outs[0] in g.outputs or not n.inputs or not n.inputs[0]:
            continue
        g.nodes[i] = None  # its entry in the readers of its input goes stale (only_reader skips it)
        g.rename(outs[0], n.inputs[0])


def _bn_scale_shift(bn: Node, consts: _Consts) -> tuple[np.ndarray, np.ndarray] | None:
    if len(bn.inputs) != 5 or not all(consts.is_const(v) for v in bn.inputs[1:]):
        return None
    if _attr(bn, "training_mode", A_INT, 0) or len([o for o in bn.outputs if o]) != 1 or not bn.outputs[0]:
        return None
    eps = _attr(bn, "epsilon", A_FLOAT, 1e-5)
    scale, bias, mean, var = (np.asarray(consts.c[v]) for v in bn.inputs[1:])
    if not (scale.ndim == bias.ndim == mean.ndim == var.ndim == 1) or len({scale.size, bias.size, mean.size,
                                                                          var.size}) != 1:
        return None
    if not all(a.dtype == np.float32 for a in (scale, bias, mean, var)) or not eps >= 0:
        return None
    with np.errstate(invalid="ignore", divide="ignore"):  # same arithmetic as the unfused op
        s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
    t = bias.astype(np.float64) - mean.astype(np.float64) * s
    return s, t


def _per_channel(consts: _Consts, name: str, rank: int, m: int) -> np.ndarray | None:
    """A constant that broadcasts against an output of ``rank`` with ``m`` channels (axis 1) along the
    channel axis only, as a float64 vector of ``m`` (None: another shape, dtype or not a constant)."""
    if not consts.is_const(name):
        return None
    v = np.asarray(consts.c[name])
    if v.dtype != np.float32 or v.ndim > rank:
        return None
    shape = (1,) * (rank - v.ndim) + v.shape
    if any(d != 1 for k, d in enumerate(shape) if k != 1) or shape[1] not in (1, m):
        return None
    return np.broadcast_to(v.astype(np.float64).reshape(-1), (m,))


def _affine_after(g: _Graph, consts: _Consts, value: str, rank: int, m: int):
    """(reader index, output, s, t) when the only reader of ``value`` is a per-channel affine map
    ``y * s + t``: an inference BatchNormalization, or a Mul / Add by a per-channel constant (what
    the exporter writes for a BatchNorm); None otherwise."""
    j = g.only_reader(value)
    if j is None:
        return None
    n = g.nodes[j]
    if n.domain not in ("", "ai.onnx") or len(n.outputs) < 1 or not n.outputs[0]:
        return None
    if n.op_type == "BatchNormalization":
        if n.inputs[0] != value or rank < 2:
            return None
        st = _bn_scale_shift(n, consts)
        if st is None or st[0].size != m:
            return None
        return j, n.outputs[0], st[0], st[1]
    if n.op_type in ("Mul", "Add") and len(n.inputs) == 2 and len(n.outputs) == 1:
        other = n.inputs[1] if n.inputs[0] == value else n.inputs[0]
        v = _per_channel(consts, other, rank, m)
        if v is None:
            return None
        if n.op_type == "Mul":
            return j, n.outputs[0], v, np.zeros(m)
        return j, n.outputs[0], np.ones(m), v
    return None


def _fold_bn(g: _Graph, consts: _Consts) -> None:
    """Fold every per-channel affine map (BatchNormalization, Mul/Add by per-channel constants) that
    follows a Conv or Gemm into its weight and bias."""
    for i, n in enumerate(g.nodes):
        if n is None or n.domain not in ("", "ai.onnx") or n.op_type not in ("Conv", "Gemm") or len(n.outputs) != 1:
            continue
        folded = True
        while folded:  # a chain (BatchNorm, then Mul, then Add) folds one map at a time
            folded = _fold_one(g, consts, n)


def _fold_one(g: _Graph, consts: _Consts, n: Node) -> bool:
    wname = n.inputs[1] if len(n.inputs) > 1 else ""
    bname = n.inputs[2] if len(n.inputs) > 2 else ""
    if not consts.is_const(wname) or not consts.exclusive(wname):
        return False
    if bname and (not consts.is_const(bname) or not consts.exclusive(bname)):
        return False
    w = np.asarray(consts.c[wname])
    if w.dtype != np.float32:
        return False
    if n.op_type == "Conv":
        if w.ndim < 3:
            return False
        m, rank = w.shape[0], w.ndim
        ws_shape = (-1,) + (1,) * (w.ndim - 1)
    else:
        ta, tb = _attr(n, "transA", A_INT, 0), _attr(n, "transB", A_INT, 0)
        if w.ndim != 2 or ta not in (0, 1) or tb not in (0, 1):
            return False
        m, rank = w.shape[0 if tb else 1], 2
        ws_shape = (-1, 1) if tb else (1, -1)
    aff = _affine_after(g, consts, n.outputs[0], rank, m)
    if aff is None:
        return False
    j, out, s, t = aff
    b = np.asarray(consts.c[bname]) if bname else None
    if b is not None:
        if b.dtype != np.float32:
            return False
        if n.op_type == "Conv" and b.shape != (m,):
            return False
        if n.op_type == "Gemm" and (b.size not in (1, m) or b.ndim > 2 or (b.ndim == 2 and b.shape[0] != 1)):
            return False
    if not consts.owned(wname) and not consts.afford(w.nbytes + 4 * m):
        return False
    # y * s + t with y = W x + b: the weight's output channels scale by s, the bias becomes b * s + t
    w2 = consts.scaled(wname, s.astype(np.float32).reshape(ws_shape))
    b64 = 0.0 if b is None else np.broadcast_to(b.astype(np.float64).reshape(-1), (m,))
    if n.op_type == "Gemm":
        # alpha * A @ (W s) + (beta * C * s + t): alpha scales the product only; the new C has beta 1
        b2 = (_attr(n, "beta", A_FLOAT, 1.0) * b64 * s + t).astype(np.float32)
        n.attrs = {**n.attrs, "beta": Attribute("beta", A_FLOAT, 1.0)}
    else:
        b2 = (b64 * s + t).astype(np.float32)
    new_w = consts.replace(wname, w2)
    del w, w2
    new_b = consts.replace(bname, b2) if bname else consts.add(f"{n.outputs[0]}.bias", b2)
    g.readers.setdefault(new_b, []).append(g.nodes.index(n))
    n.inputs = [n.inputs[0], new_w, new_b]
    g.nodes[j] = None
    n.outputs = [out]
    return True


def _activation(n: Node, consts: _Consts, opset: int) -> tuple[str, float, float, float] | None:
    """(kind, alpha, lo, hi) of an activation node the kernels can apply, or None."""
    if n.domain not in ("", "ai.onnx") or len(n.outputs) != 1:
        return None
    if n.op_type == "Relu" and len(n.inputs) == 1:
        return "relu", 0.0, 0.0, 0.0
    if n.op_type == "LeakyRelu" and len(n.inputs) == 1:
        return "leaky", float(np.float32(_attr(n, "alpha", A_FLOAT, 0.01))), 0.0, 0.0
    if n.op_type == "Clip":
        if opset >= 11:
            bounds = []
            for k in (1, 2):
                name = n.inputs[k] if len(n.inputs) > k else ""
                if not name:
                    bounds.append(None)
                    continue
                if not consts.is_const(name):
                    return None
                v = np.asarray(consts.c[name])
                if v.size != 1 or v.ndim > 1 or v.dtype != np.float32:
                    return None
                bounds.append(float(v.reshape(())))
            lo, hi = bounds
        else:
            if len(n.inputs) != 1:
                return None
            lo, hi = _attr(n, "min", A_FLOAT, None), _attr(n, "max", A_FLOAT, None)
        return "clip", 0.0, (-np.inf if lo is None else lo), (np.inf if hi is None else hi)
    return None


def _next(g: _Graph, value: str, op: str | None = None) -> tuple[int, Node] | None:
    """The only reader of ``value`` (of type ``op`` when given, default domain), or None."""
    j = g.only_reader(value)
    if j is None:
        return None
    n = g.nodes[j]
    if n.domain not in ("", "ai.onnx") or (op is not None and n.op_type != op):
        return None
    return j, n


def _residual(g: _Graph, value: str) -> tuple[int, Node, str] | None:
    """An Add reading ``value`` and one other tensor (the residual), or None."""
    nxt = _next(g, value, "Add")
    if nxt is None:
        return None
    j, add = nxt
    if len(add.inputs) != 2 or len(add.outputs) != 1 or not add.outputs[0] or value not in add.inputs:
        return None
    other = add.inputs[1] if add.inputs[0] == value else add.inputs[0]
    if not other or other == value:
        return None
    return j, add, other


def _absorb_activation(g: _Graph, consts: _Consts, opset: int, cur: str, chain: list[int]):
    """If the only reader of ``cur`` is a fusable activation reading it first, add that node to ``chain``
    and return (activation, its output); else (None, ``cur``)."""
    nxt = _next(g, cur)
    if nxt is not None and nxt[1].inputs[:1] == [cur]:
        act = _activation(nxt[1], consts, opset)
        if act is not None:
            chain.append(nxt[0])
            return act, nxt[1].outputs[0]
    return None, cur


def _fuse(g: _Graph, consts: _Consts, opset: int, order: list[int]) -> list[Node]:
    """Conv -> [activation] -> [Add] -> [activation] chains (one activation at most) become one
    AdtConv, run where the chain's last node ran (so the residual is already computed); Gemm ->
    activation becomes AdtGemm."""
    for i in order:
        n = g.nodes[i]
        if n is None or n.domain not in ("", "ai.onnx") or n.op_type not in ("Conv", "Gemm") or len(n.outputs) != 1:
            continue
        chain: list[int] = []
        cur = n.outputs[0]
        residual = None
        act, cur = _absorb_activation(g, consts, opset, cur, chain)
        act_first = int(act is not None)
        if n.op_type == "Conv":
            res = _residual(g, cur)
            if res is not None:
                chain.append(res[0])
                residual = res[2]
                cur = res[1].outputs[0]
                if act is None:
                    act, cur = _absorb_activation(g, consts, opset, cur, chain)
        if n.op_type == "Gemm" and act is None:
            continue
        packed = _pack(n, consts) if n.op_type == "Conv" else None
        if n.op_type == "Conv" and packed is None:
            continue  # not 2-D / weight not constant: the general Conv kernel, nothing fused
        attrs = dict(n.attrs)
        if act is not None:
            kind, alpha, lo, hi = act
            attrs["activation"] = Attribute("activation", A_STRING, kind.encode())
            attrs["act_alpha"] = Attribute("act_alpha", A_FLOAT, alpha)
            attrs["act_lo"] = Attribute("act_lo", A_FLOAT, lo)
            attrs["act_hi"] = Attribute("act_hi", A_FLOAT, hi)
            attrs["act_first"] = Attribute("act_first", A_INT, act_first)
        if n.op_type == "Conv":
            wshape, layout, wname = packed
            attrs["w_shape"] = Attribute("w_shape", A_INTS, list(wshape))
            attrs["packing"] = Attribute("packing", A_INT, int(layout))
            bias = n.inputs[2] if len(n.inputs) > 2 else ""
            ins = [n.inputs[0], wname] + ([bias, residual] if residual else [bias] if bias else [])
            fused = Node(CONV_OP, n.name, INTERNAL_DOMAIN, ins, [cur], attrs)
        else:
            fused = Node(GEMM_OP, n.name, INTERNAL_DOMAIN, list(n.inputs), [cur], attrs)
        # the fused node runs where the chain's last node ran: every input is ready there
        g.nodes[i] = None
        for j in chain[:-1]:
            g.nodes[j] = None
        if chain:
            g.nodes[chain[-1]] = fused
        else:
            g.nodes[i] = fused
    return [g.nodes[i] for i in order if g.nodes[i] is not None]


def _ohwi_in_place(w: np.ndarray) -> np.ndarray:
    """The (M, C, KH, KW) weight ``w`` rewritten in its own memory as (M, KH, KW, C), a few filters at
    a time (so the only temporary is ~1 MiB, never a second copy of the weight)."""
    m, c, kh, kw = w.shape
    flat = w.reshape(m, c * kh * kw)
    step = max(1, (1 << 18) // max(1, c * kh * kw))
    for i in range(0, m, step):
        flat[i:i + step] = w[i:i + step].transpose(0, 2, 3, 1).reshape(-1, c * kh * kw)  # RHS copied first
    return flat.reshape(m, kh, kw, c)


#: a group-1 weight this large that the engine owns is re-laid in place (OHWI) instead of copied
INPLACE_MIN_BYTES = 1 << 20


def _pack(n: Node, consts: _Consts) -> tuple[tuple[int, ...], int, str] | None:
    """Pack a 2-D Conv's constant weight for the NHWC kernels; (original shape, packing, new name)."""
    if len(n.inputs) < 2 or not consts.is_const(n.inputs[1]) or not consts.exclusive(n.inputs[1]):
        return None
    wname = n.inputs[1]
    w = np.asarray(consts.c[wname])
    group = _attr(n, "group", A_INT, 1)
    if w.ndim != 4 or w.dtype != np.float32 or group < 1 or w.shape[0] % group or min(w.shape) < 1:
        return None
    if len(n.inputs) > 2 and n.inputs[2]:
        b = consts.c.get(n.inputs[2]) if consts.is_const(n.inputs[2]) else None
        if b is None or np.asarray(b).dtype != np.float32 or np.asarray(b).size != w.shape[0]:
            return None
    ks = _attr(n, "kernel_shape", A_INTS, None)
    if ks and list(ks) != list(w.shape[2:]):
        return None  # the general kernel reports it
    m, cg, kh, kw = shape = w.shape
    if group == 1 and w.nbytes >= INPLACE_MIN_BYTES and w.flags.c_contiguous and consts.writable(wname) is not None:
        # a large owned weight: re-laid in its own memory (the products take it transposed, no copy)
        del w
        return shape, Packing.OHWI, consts.replace(wname, _ohwi_in_place(consts.c[wname]))
    if not consts.owned(wname) and not consts.afford(w.nbytes):
        return None
    if group == 1:
        p, layout = w.transpose(2, 3, 1, 0).reshape(kh * kw * cg, m), Packing.GEMM
    elif cg == 1 and group == m:
        p, layout = w.reshape(m, kh, kw).transpose(1, 2, 0), Packing.DEPTHWISE
    else:
        mg = m // group
        p = w.reshape(group, mg, cg, kh, kw).transpose(0, 3, 4, 2, 1).reshape(group, kh * kw * cg, mg)
        layout = Packing.GROUPED
    del w
    return shape, layout, consts.replace(wname, np.ascontiguousarray(p))


def rewrite(nodes: Sequence[Node], consts: MutableMapping[str, np.ndarray], outputs: Sequence[str], opset: int,
            sources: Sequence[MutableMapping[str, np.ndarray]] = (), budget: int | None = None) -> list[Node]:
    """The rewritten node list (execution order kept) for ``nodes`` (in execution order, constant
    nodes already folded into ``consts``); ``consts`` is updated in place (replaced weights are
    removed, new ones added under fresh names); see the module doc for ``sources`` and ``budget``.
    The input nodes are not modified."""
    copies = [Node(n.op_type, n.name, n.domain, list(n.inputs), list(n.outputs), dict(n.attrs)) for n in nodes]
    g = _Graph(copies, outputs)
    names = {v for n in nodes for v in (*n.inputs, *n.outputs) if v} | set(outputs)
    c = _Consts(consts, sources, budget, g.readers, names)
    c.graph = g
    _drop_passthrough(g)
    _fold_bn(g, c)
    fused = _fuse(g, c, opset, list(range(len(g.nodes))))
    # a fused node stands for several; keep the originals' objects where nothing changed
    originals = {id(cp): n for cp, n in zip(copies, nodes)}
    return [originals.get(id(n), n) if _same(n, originals.get(id(n))) else n for n in fused]


def _same(a: Node, b: Node | None) -> bool:
    return b is not None and a.op_type == b.op_type and a.inputs == b.inputs and a.outputs == b.outputs \
        and a.attrs == b.attrs

