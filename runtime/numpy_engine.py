"""Run an ONNX architecture with NumPy alone (no onnx, no onnxruntime, no torch).

At load time every node is compiled once into a closure with its attributes resolved, nodes whose
inputs are all constant (weights, initializers, Constant nodes) are evaluated once, and the last use
of every intermediate is recorded so it can be freed during the run. Before a constant node is
folded and before a run, every output shape is inferred (:data:`SHAPES`, the ops' own rules) and
checked against ``max_memory`` (see :meth:`NumpyEngine.plan`). Everything stays float32; there
are no per-element Python loops (pooling reduces one axis at a time).

After constant folding, the load-time inference rewrites of :mod:`adt.runtime.graph_rewrites` fold
BatchNorm (and per-channel Mul/Add) into the conv or Gemm before it and fuse bias, activation and a
residual Add into 2-D convs with constant weights (``AdtConv``), whose kernels keep activations in
NHWC memory behind an NCHW view: a 1x1 conv is one matmul on the input itself, a group-1 conv one
matmul per kernel row over row-shifted columns (taps that read only padding are skipped), a
depthwise conv one einsum over the strided windows, a grouped conv one batched matmul; all in
cache-sized blocks with the epilogue applied to each block. Other convs (1-D/3-D, weights computed
at run time) use im2col + one matmul per chunk of samples. ``rewrites=False`` runs the graph as stored.
"""
from __future__ import annotations

import heapq
import sys
from math import prod
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from .errors import AdtBudgetError, AdtExecutionError, AdtGraphError, AdtUnsupportedOpError
from .format import AdtArchitectureError, AdtError
from .rebuild import DEFAULT_MAX_MEMORY, _check_limit, format_bytes
from .graph_rewrites import CONV_OP, GEMM_OP, INTERNAL_DOMAIN, Packing, rewrite
from .onnx_proto import A_FLOAT, A_FLOATS, A_INT, A_INTS, A_STRING, A_TENSOR, Graph, Node, OnnxModel

__all__ = ["ARITY", "INTERNAL_OPS", "MAX_ARRAY_BYTES", "OPS", "SHAPES", "ExecutionPlan", "NumpyEngine", "Val",
           "infer_node", "topological_order", "validate_graph"]

Fn = Callable[..., tuple]
F32 = np.float32
_COLS_CHUNK = 1 << 18  # float32 elements of im2col columns per matmul (1 MiB)


# -- attribute helpers ------------------------------------------------------------------------------
def _attr(node: Node, name: str, kind: int, default):
    a = node.attrs.get(name)
    if a is None:
        return default
    if a.type != kind:
        raise AdtArchitectureError(f"{node.label()}: attribute {name!r} has type {a.type}, expected {kind}")
    return a.value


def _int(node, name, default=None):
    return _attr(node, name, A_INT, default)


def _ints(node, name, default=None):
    return _attr(node, name, A_INTS, default)


def _float(node, name, default=None):
    return _attr(node, name, A_FLOAT, default)


def _str(node, name, default=None):
    v = _attr(node, name, A_STRING, None)
    return default if v is None else v.decode("utf-8", "replace")


def _unsupported(node: Node, what: str) -> AdtUnsupportedOpError:
    return AdtUnsupportedOpError(f"{node.label()}: {what} is not supported by the NumPy engine")


# -- convolution and pooling geometry ---------------------------------------------------------------
def _pads(node: Node, spatial: Sequence[int], kernel: Sequence[int], strides, dilations,
          ceil_mode: bool = False) -> tuple[list[int], list[int], list[int], list[int]]:
    """Resolve auto_pad/pads/ceil_mode -> (pads_begin, pads_end, out_dims, extra_end) where extra_end
    is the padding ceil_mode adds beyond the declared pads (never counted as padding by AveragePool)."""
    s = len(spatial)
    auto = _str(node, "auto_pad", "NOTSET")
    eff = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = [-(-n // st) for n, st in zip(spatial, strides)]
        total = [max(0, (o - 1) * st + e - n) for o, st, e, n in zip(out, strides, eff, spatial)]
        small = [t // 2 for t in total]
        begin = small if auto == "SAME_UPPER" else [t - sm for t, sm in zip(total, small)]
        end = [t - b for t, b in zip(total, begin)]
    elif auto in ("NOTSET", "VALID"):
        pads = _ints(node, "pads", None) if auto == "NOTSET" else None
        pads = list(pads) if pads else [0] * (2 * s)
        if len(pads) != 2 * s or min(pads) < 0:
            raise AdtArchitectureError(f"{node.label()}: pads {pads} do not fit {s} spatial dims")
        begin, end = pads[:s], pads[s:]
    else:
        raise _unsupported(node, f"auto_pad={auto!r}")
    out, extra = [], []
    for n, b, e, k, st in zip(spatial, begin, end, eff, strides):
        span = n + b + e - k
        if span < 0:
            raise AdtExecutionError(f"{node.label()}: kernel extent {k} is larger than the padded input {n + b + e}")
        o = (-(-span // st) if ceil_mode else span // st) + 1
        if ceil_mode and (o - 1) * st >= n + b:  # the last window must start inside input + left pad
            o -= 1
        out.append(o)
        extra.append(max(0, (o - 1) * st + k - (n + b + e)))
    return begin, end, out, extra


def _geometry(node: Node, x_ndim: int, kernel: Sequence[int]):
    s = x_ndim - 2
    if s < 1 or len(kernel) != s:
        raise AdtExecutionError(f"{node.label()}: input of rank {x_ndim} does not fit a kernel of {len(kernel)} dims")
    strides = list(_ints(node, "strides", None) or [1] * s)
    dil = list(_ints(node, "dilations", None) or [1] * s)
    if len(strides) != s or len(dil) != s or min(strides) < 1 or min(dil) < 1:
        raise AdtArchitectureError(f"{node.label()}: strides {strides} / dilations {dil} do not fit {s} spatial dims")
    return strides, dil


_POOL_LOOP_MAX = 8  # a pooling axis with a kernel this small is reduced by a loop over its offsets


def _sliding_1d(y: np.ndarray, kind: str, k: int, d: int) -> np.ndarray:
    """Max or sum of every window of ``k`` elements ``d`` apart along the last axis of ``y``, for
    every start position (``P - (k-1)d`` of them), in O(P) whatever ``k``: the axis is folded to
    (Q, d) so that each column holds one residue class and the windows are ``k`` consecutive rows;
    a sum is a difference of float64 prefix sums, a max the van Herk/Gil-Werman block scan (prefix
    and suffix maxima of blocks of ``k`` rows). Max is exact; a sum differs from the sequential
    float32 sum by rounding only."""
    p = y.shape[-1]
    lead = y.shape[:-1]
    q = -(-p // d)
    fill = -np.inf if kind == "max" else 0.0
    z = np.full(lead + (q * d,), fill, dtype=y.dtype)
    z[..., :p] = y
    z = z.reshape(lead + (q, d))
    n = q - k + 1  # window starts per residue class
    if kind == "max":
        q2 = -(-q // k) * k
        b = np.full(lead + (q2, d), fill, dtype=y.dtype)
        b[..., :q, :] = z
        del z
        blocks = b.reshape(lead + (q2 // k, k, d))
        g = np.maximum.accumulate(blocks, axis=-2).reshape(lead + (q2, d))
        h = np.maximum.accumulate(blocks[..., ::-1, :], axis=-2)[..., ::-1, :].reshape(lead + (q2, d))
        del b, blocks
        r = np.maximum(h[..., :n, :], g[..., k - 1:k - 1 + n, :])
    else:
        c = np.zeros(lead + (q + 1, d), dtype=np.float64)
        np.cumsum(z, axis=-2, dtype=np.float64, out=c[..., 1:, :])
        r = (c[..., k:, :] - c[..., :n, :]).astype(y.dtype)
    return r.reshape(lead + (n * d,))[..., :p - (k - 1) * d]


def _sliding_1d_bytes(other: int, p: int, k: int, d: int) -> int:
    """An upper bound of what :func:`_sliding_1d` allocates at once for ``other`` rows of ``p``."""
    q = -(-p // d)
    q2 = -(-q // k) * k
    return other * d * (q + 3 * q2 + 2 * (q + 1)) * 8


def _reduce_windows(xp: np.ndarray, kind: str, kernel, strides, dil, out) -> np.ndarray:
    """Max ("max") or sum (else) of every (dilated, strided) window of the padded ``xp``, one spatial
    axis after the other (both reductions are separable). An axis with a small kernel is reduced by
    k strided slices (fastest for the usual 2x2/3x3), a larger one by :func:`_sliding_1d` in time
    linear in the axis whatever the kernel. O(sum of the kernel dims) Python steps at most, never one
    per kernel position."""
    y = xp
    for i, (k, st, d, o) in enumerate(zip(kernel, strides, dil, out)):
        ax = 2 + i
        if k <= _POOL_LOOP_MAX:
            acc = None
            for j in range(k):
                sl = [slice(None)] * y.ndim
                sl[ax] = slice(j * d, j * d + (o - 1) * st + 1, st)
                v = y[tuple(sl)]
                if acc is None:
                    acc = v.copy(order="K")  # keep the memory order (NHWC activations stay NHWC)
                elif kind == "max":
                    np.maximum(acc, v, out=acc)
                else:
                    acc += v
        else:
            full = _sliding_1d(np.moveaxis(y, ax, -1), kind, k, d)[..., :(o - 1) * st + 1:st]
            acc = np.ascontiguousarray(np.moveaxis(full, -1, ax))
        y = acc
    return y


_MAX_PAD_GROWTH = 8  # a padded copy may be this many times the input (or 4 Mi elements) at most


def _pad(x: np.ndarray, begin, end, value, node: Node | None = None) -> np.ndarray:
    if not any(begin) and not any(end):
        return x
    size = prod(x.shape[:2]) * prod(n + b + e for n, b, e in zip(x.shape[2:], begin, end))
    if size > max(_MAX_PAD_GROWTH * x.size, 1 << 22):
        # real models pad by a kernel radius; this keeps a corrupted file from allocating gigabytes
        raise AdtArchitectureError(
            f"{node.label() if node else 'pad'}: pads {list(begin)}+{list(end)} would grow the input "
            f"{list(x.shape)} to {size} elements")
    # the padded copy keeps the input's memory order (an NHWC-memory activation stays NHWC)
    out = np.empty_like(x, shape=x.shape[:2] + tuple(n + b + e for n, b, e in zip(x.shape[2:], begin, end)))
    out.fill(value)
    out[(slice(None), slice(None)) + tuple(slice(b, b + n) for n, b in zip(x.shape[2:], begin))] = x
    return out


def _conv(node: Node, opset: int, consts) -> Fn:
    group = _int(node, "group", 1)
    kernel_attr = _ints(node, "kernel_shape", None)

    def run(x, w, b=None):
        if x.ndim != w.ndim:
            raise AdtExecutionError(f"{node.label()}: input rank {x.ndim} != weight rank {w.ndim}")
        kernel = list(w.shape[2:])
        if kernel_attr and list(kernel_attr) != kernel:
            raise AdtArchitectureError(f"{node.label()}: kernel_shape {kernel_attr} != weight dims {kernel}")
        n, c = x.shape[:2]
        m = w.shape[0]
        if c != w.shape[1] * group or m % group:
            raise AdtExecutionError(
                f"{node.label()}: input has {c} channels, weight {list(w.shape)} with group={group} expects "
                f"{w.shape[1] * group}")
        strides, dil = _geometry(node, x.ndim, kernel)
        begin, end, out, _ = _pads(node, x.shape[2:], kernel, strides, dil)
        xp = _pad(x, begin, end, 0.0, node)
        s = len(kernel)
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, dil)]
        # im2col: a strided view of every window, copied into columns (N, C*K, L) whose innermost
        # axis walks the output positions (stride-1 reads), then a matmul per sample that writes
        # NCHW directly. Measured faster than (N*L, C*K) @ W.T (a strided copy plus an output
        # transpose) for every LeNet/ResNet layer shape. Samples go in chunks whose columns fit in
        # ~1 MiB so the matmul reads them from cache (10-30% faster for batch 64).
        win = sliding_window_view(xp, eff, axis=tuple(range(2, 2 + s)))
        win = win[(slice(None), slice(None)) + tuple(slice(0, (o - 1) * st + 1, st) for o, st in zip(out, strides))
                  + tuple(slice(None, None, d) for d in dil)]
        win = win.transpose((0, 1) + tuple(range(2 + s, 2 + 2 * s)) + tuple(range(2, 2 + s)))  # (N, C, *k, *out)
        L = prod(out)
        K = prod(kernel)
        cg, mg = c // group, m // group
        wg = w.reshape(group, mg, cg * K)
        y = np.empty((n, group, mg, L), dtype=np.result_type(x, w))
        step = max(1, _COLS_CHUNK // max(1, c * K * L))
        for i in range(0, n, step):
            cols = win[i:i + step].reshape(-1, group, cg * K, L)
            np.matmul(wg, cols, out=y[i:i + step])
        y = y.reshape(n, m, L)
        if b is not None:
            y += b.reshape(m, 1)
        return (y.reshape((n, m) + tuple(out)),)
    return run


def _pool(node: Node, opset: int, consts, kind: str) -> Fn:
    kernel = _ints(node, "kernel_shape", None)
    if not kernel:
        raise AdtArchitectureError(f"{node.label()}: kernel_shape is required")
    ceil_mode = bool(_int(node, "ceil_mode", 0))
    include_pad = bool(_int(node, "count_include_pad", 0))
    if len(node.outputs) > 1 and node.outputs[1]:
        raise _unsupported(node, "the Indices output of MaxPool")
    if kind == "max" and _int(node, "storage_order", 0) not in (0, 1):
        raise AdtArchitectureError(f"{node.label()}: storage_order must be 0 or 1")
    counts_cache: dict[tuple, np.ndarray] = {}

    def run(x):
        strides, dil = _geometry(node, x.ndim, kernel)
        if kind == "avg" and dil != [1] * len(dil) and opset < 19:
            raise AdtArchitectureError(f"{node.label()}: AveragePool dilations need opset 19")
        begin, end, out, extra = _pads(node, x.shape[2:], kernel, strides, dil, ceil_mode)
        end_all = [e + x_ for e, x_ in zip(end, extra)]
        fill = -np.inf if kind == "max" else 0.0
        xp = _pad(x, begin, end_all, fill, node)
        acc = _reduce_windows(xp, kind, kernel, strides, dil, out)
        if kind == "max":
            return (acc,)
        key = (tuple(x.shape[2:]),)
        counts = counts_cache.get(key)
        if counts is None:
            # divisor per output position: window cells inside the input (+ the declared pads when
            # count_include_pad); the padding ceil_mode adds is never counted
            mask = np.zeros(tuple(n + b + e for n, b, e in zip(x.shape[2:], begin, end_all)), F32)
            inner = tuple(slice(0, b + n + e) if include_pad else slice(b, b + n)
                          for n, b, e in zip(x.shape[2:], begin, end))
            mask[inner] = 1.0
            counts = _reduce_windows(mask[None, None], "avg", kernel, strides, dil, out)
            counts = np.maximum(counts, 1.0)
            counts_cache[key] = counts
        acc /= counts
        return (acc,)
    return run


def _global_pool(kind):
    def factory(node, opset, consts):
        def run(x):
            axes = tuple(range(2, x.ndim))
            return (x.mean(axis=axes, keepdims=True, dtype=F32) if kind == "avg" else x.max(axis=axes, keepdims=True),)
        return run
    return factory


# -- dense and elementwise ops --------------------------------------------------------------------
def _gemm(node, opset, consts) -> Fn:
    alpha = F32(_float(node, "alpha", 1.0))
    beta = F32(_float(node, "beta", 1.0))
    ta, tb = _int(node, "transA", 0), _int(node, "transB", 0)

    def run(a, b, c=None):
        if a.ndim != 2 or b.ndim != 2:
            raise AdtExecutionError(f"{node.label()}: Gemm needs 2-D A and B, got {list(a.shape)} and {list(b.shape)}")
        y = (a.T if ta else a) @ (b.T if tb else b)
        if alpha != 1:
            y *= alpha
        if c is not None:
            y += c if beta == 1 else beta * c
        return (y,)
    return run


def _int_div(a, b):
    """ONNX integer Div truncates toward zero (C semantics), unlike Python's floor division."""
    q = np.floor_divide(a, b)
    return q + ((np.remainder(a, b) != 0) & ((a < 0) != (b < 0)))


def _binary(fn):
    def factory(node, opset, consts):
        def run(a, b):
            if fn is np.divide and np.issubdtype(a.dtype, np.integer):
                return (_int_div(a, b),)
            return (fn(a, b),)
        return run
    return factory


def _unary(fn):
    def factory(node, opset, consts):
        return lambda x: (fn(x),)
    return factory


def _relu(x):
    if x.dtype.kind == "f":  # one clip pass is ~3x faster than np.maximum with a scalar (NaN stays NaN)
        return np.clip(x, x.dtype.type(0), x.dtype.type(np.inf))
    return np.maximum(x, x.dtype.type(0))


def _sigmoid(x):
    # split by sign so exp never overflows
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1 / (1 + np.exp(-x[pos]))
    e = np.exp(x[~pos])
    out[~pos] = e / (1 + e)
    return out


def _leaky_relu(node, opset, consts):
    alpha = F32(_float(node, "alpha", 0.01))
    return lambda x: (np.where(x >= 0, x, x * alpha),)


def _clip(node, opset, consts):
    lo_attr, hi_attr = _float(node, "min", None), _float(node, "max", None)

    def run(x, lo=None, hi=None):
        lo = lo_attr if lo is None else lo
        hi = hi_attr if hi is None else hi
        if lo is not None:
            x = np.maximum(x, np.asarray(lo, dtype=x.dtype))
        if hi is not None:
            x = np.minimum(x, np.asarray(hi, dtype=x.dtype))
        return (x,)
    return run


def _softmax(log: bool):
    def factory(node, opset, consts):
        axis = _int(node, "axis", -1 if opset >= 13 else 1)

        def run(x):
            ax = axis + x.ndim if axis < 0 else axis
            if not 0 <= ax < x.ndim:
                raise AdtExecutionError(f"{node.label()}: axis {axis} out of range for rank {x.ndim}")
            shape = x.shape
            if opset < 13:  # old semantics: coerce to 2-D at `axis`, normalise over the flattened tail
                x = x.reshape(prod(shape[:ax]), prod(shape[ax:]))
                ax = 1
            z = x - x.max(axis=ax, keepdims=True)
            if log:
                y = z - np.log(np.exp(z).sum(axis=ax, keepdims=True))
            else:
                y = np.exp(z)
                y /= y.sum(axis=ax, keepdims=True)
            return (y.reshape(shape),)
        return run
    return factory


def _batchnorm(node, opset, consts) -> Fn:
    eps = _float(node, "epsilon", 1e-5)
    if not eps >= 0:
        raise AdtArchitectureError(f"{node.label()}: epsilon {eps} must be >= 0")
    if _int(node, "training_mode", 0) or len([o for o in node.outputs if o]) > 1:
        raise _unsupported(node, "training-mode BatchNormalization (running-statistics outputs)")
    cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def run(x, scale, bias, mean, var):
        key = (id(scale), id(bias), id(mean), id(var))
        st = cache.get(key)
        if st is None:
            # y = (x - mean) / sqrt(var + eps) * scale + bias == x * s + t, folded in float64 once
            with np.errstate(invalid="ignore", divide="ignore"):  # a negative variance gives NaN, as in onnxruntime
                s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + eps)
            t = bias.astype(np.float64) - mean.astype(np.float64) * s
            st = (s.astype(F32), t.astype(F32))
            if all(a is consts.get(n) for a, n in zip((scale, bias, mean, var), node.inputs[1:5])):
                cache[key] = st  # constant parameters: fold once
        s, t = st
        if x.ndim < 2 or x.shape[1] != s.shape[0]:
            raise AdtExecutionError(f"{node.label()}: input {list(x.shape)} does not have {s.shape[0]} channels")
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = x * s.reshape(shape)
        y += t.reshape(shape)
        return (y,)
    return run


# -- shape ops ------------------------------------------------------------------------------------
def _flatten(node, opset, consts):
    axis = _int(node, "axis", 1)

    def run(x):
        ax = axis + x.ndim if axis < 0 else axis
        if not 0 <= ax <= x.ndim:
            raise AdtExecutionError(f"{node.label()}: axis {axis} out of range for rank {x.ndim}")
        return (x.reshape(prod(x.shape[:ax]), prod(x.shape[ax:])),)
    return run


def _reshape_target(node: Node, in_shape: Sequence[int], shape) -> list[int]:
    """The output shape of Reshape(x of ``in_shape``, ``shape``): 0 copies the input's dim (unless
    allowzero), one -1 is inferred; raises AdtExecutionError when the element counts differ. Both the
    op and the shape inference use it, so the plan and the run agree."""
    target = [int(v) for v in np.asarray(shape).reshape(-1)]
    if not _int(node, "allowzero", 0):
        for i, v in enumerate(target):
            if v == 0:
                if i >= len(in_shape):
                    raise AdtExecutionError(f"{node.label()}: shape {target} copies dim {i} of a rank-{len(in_shape)} input")
                target[i] = in_shape[i]
    if target.count(-1) > 1 or any(v < -1 for v in target):
        raise AdtExecutionError(f"{node.label()}: invalid target shape {target}")
    size = prod(in_shape)
    if -1 in target:
        known = prod(v for v in target if v != -1)
        if known == 0 or size % known:
            raise AdtExecutionError(f"{node.label()}: cannot reshape {list(in_shape)} to {target}")
        target[target.index(-1)] = size // known
    if prod(target) != size:
        raise AdtExecutionError(f"{node.label()}: cannot reshape {list(in_shape)} to {target}")
    return target


def _reshape(node, opset, consts):
    def run(x, shape):
        return (x.reshape(_reshape_target(node, x.shape, shape)),)
    return run


def _transpose(node, opset, consts):
    perm = _ints(node, "perm", None)
    return lambda x: (np.transpose(x, perm if perm else None),)


def _concat(node, opset, consts):
    axis = _int(node, "axis", None)
    if axis is None:
        raise AdtArchitectureError(f"{node.label()}: attribute 'axis' is required")
    return lambda *xs: (np.concatenate([x for x in xs if x is not None], axis=axis),)


def _shape(node, opset, consts):
    start, end = _int(node, "start", 0), _int(node, "end", None)
    return lambda x: (np.array(x.shape[start:end], dtype=np.int64),)


def _gather(node, opset, consts):
    axis = _int(node, "axis", 0)

    def run(x, idx):
        ax = axis + x.ndim if axis < 0 else axis
        idx = np.asarray(idx)
        n = x.shape[ax]
        if idx.size and (idx.min() < -n or idx.max() >= n):
            raise AdtExecutionError(f"{node.label()}: index out of range [-{n}, {n}) on axis {axis}")
        return (np.take(x, np.where(idx < 0, idx + n, idx), axis=ax),)
    return run


def _axes(node, opset, axes_input):
    if opset >= 13:
        return None if axes_input is None else [int(v) for v in np.asarray(axes_input).reshape(-1)]
    return _ints(node, "axes", None)


def _unsqueeze_axes(node: Node, opset: int, axes, ndim: int) -> list[int]:
    """Unsqueeze's new axes, sorted and non-negative, for an input of rank ``ndim`` (the op and its
    shape rule share it)."""
    ax = _axes(node, opset, axes)
    if not ax:
        raise AdtArchitectureError(f"{node.label()}: axes are required")
    r = ndim + len(ax)
    ax = sorted(a + r if a < 0 else a for a in ax)
    if len(set(ax)) != len(ax) or not all(0 <= a < r for a in ax):
        raise AdtExecutionError(f"{node.label()}: invalid axes {ax} for output rank {r}")
    return ax


def _unsqueeze(node, opset, consts):
    def run(x, axes=None):
        for a in _unsqueeze_axes(node, opset, axes, x.ndim):
            x = np.expand_dims(x, a)
        return (x,)
    return run


def _squeeze(node, opset, consts):
    def run(x, axes=None):
        ax = _axes(node, opset, axes)
        if not ax:
            return (np.squeeze(x),)
        ax = tuple(a + x.ndim if a < 0 else a for a in ax)
        if any(not 0 <= a < x.ndim or x.shape[a] != 1 for a in ax):
            raise AdtExecutionError(f"{node.label()}: cannot squeeze axes {ax} of shape {list(x.shape)}")
        return (np.squeeze(x, axis=ax),)
    return run


def _constant(node, opset, consts):
    if len(node.attrs) != 1:
        raise AdtArchitectureError(f"{node.label()}: Constant needs exactly one value attribute")
    (name, a), = node.attrs.items()
    if name == "value" and a.type == A_TENSOR:
        val = a.value.array
    elif name == "value_float" and a.type == A_FLOAT:
        val = np.array(a.value, F32)
    elif name == "value_floats" and a.type == A_FLOATS:
        val = np.array(a.value, F32)
    elif name == "value_int" and a.type == A_INT:
        val = np.array(a.value, np.int64)
    elif name == "value_ints" and a.type == A_INTS:
        val = np.array(a.value, np.int64)
    else:
        raise _unsupported(node, f"Constant attribute {name!r}")
    return lambda: (val,)


def _identity(node, opset, consts):
    return lambda x: (x,)


def _dropout(node, opset, consts):
    if len([o for o in node.outputs if o]) > 1:
        raise _unsupported(node, "the mask output of Dropout")
    return lambda x, *rest: (x,)


# -- the fused kernels of the load-time rewrites (adt.runtime.graph_rewrites) ----------------------
# Activations between these convs live in NHWC memory: the kernel returns ``y.transpose(0, 3, 1, 2)``,
# an NCHW array (the ONNX semantics, for every op downstream) whose memory is NHWC, and reads its
# input through ``x.transpose(0, 2, 3, 1)``, a contiguous NHWC view when the producer was a conv.
# NumPy's elementwise ops keep that memory order (Add, Relu, BatchNormalization), so consecutive convs
# pay no transposes; graph outputs are made C-contiguous at the end of a run.
_BLOCK = 1 << 17  # float32 elements of im2col columns per block: fits L2 (measured best of 2^15..2^20)
_BLOCK_1X1 = 1 << 23  # 1x1 convs: few large products (OpenBLAS's per-call cost dominates small ones; measured)
_FEW_ROWS = 64  # output positions (all samples) up to which a group-1 conv is one product on full columns
_DW_BLOCK = 1 << 18  # depthwise window-copy block (measured best of 2^15..2^19)


def _act_of(node: Node):
    """The fused activation of an AdtConv/AdtGemm node as an in-place function of a block (or None)."""
    kind = _str(node, "activation", None)
    if kind is None:
        return None
    # np.clip with both bounds finite-or-infinite floats is one SIMD pass, ~3x faster than
    # np.maximum/np.minimum with a scalar (measured, numpy 2.x); NaN stays NaN either way
    if kind == "relu":
        return lambda y: np.clip(y, F32(0), F32(np.inf), out=y)
    if kind == "leaky":
        alpha = F32(_float(node, "act_alpha", 0.01))
        return lambda y: np.copyto(y, y * alpha, where=~(y >= 0))  # == where(x >= 0, x, x * alpha)
    if kind == "clip":
        lo, hi = _float(node, "act_lo", -np.inf), _float(node, "act_hi", np.inf)
        lo32, hi32 = F32(lo), F32(hi)

        if np.isnan(lo) or np.isnan(hi):  # NaN bounds: exactly max-then-min (every value NaN)
            def clip(y):
                np.maximum(y, lo32, out=y)
                np.minimum(y, hi32, out=y)
            return clip
        return lambda y: np.clip(y, lo32, hi32, out=y)  # lo > hi gives hi, as min(max(y, lo), hi)
    raise AdtArchitectureError(f"{node.label()}: unknown fused activation {kind!r}")


def _packed_weight_shape(node: Node) -> tuple[int, ...]:
    return tuple(_ints(node, "w_shape", ()))


def _conv_geometry(node: Node, x_shape, wshape):
    kernel = list(wshape[2:])
    strides, dil = _geometry(node, len(x_shape), kernel)
    begin, end, out, _ = _pads(node, x_shape[2:], kernel, strides, dil)
    return kernel, strides, dil, begin, end, out


def _check_pad_growth(x: np.ndarray, begin, end, node: Node) -> None:
    size = x.shape[0] * x.shape[1] * prod(n + b + e for n, b, e in zip(x.shape[2:], begin, end))
    if size > max(_MAX_PAD_GROWTH * x.size, 1 << 22):
        # real models pad by a kernel radius; this keeps a corrupted file from allocating gigabytes
        raise AdtArchitectureError(f"{node.label()}: pads {list(begin)}+{list(end)} would grow the input "
                                   f"{list(x.shape)} to {size} elements")


def _nhwc_padded(x: np.ndarray, begin, end, node: Node) -> np.ndarray:
    """x (NCHW semantics, any memory order) as an NHWC array with the zero padding; a view when
    there is no padding."""
    xh = x.transpose(0, 2, 3, 1)
    if not any(begin) and not any(end):
        return xh
    n, h, w, c = xh.shape
    _check_pad_growth(x, begin, end, node)
    xp = np.zeros((n, h + begin[0] + end[0], w + begin[1] + end[1], c), dtype=x.dtype)
    xp[:, begin[0]:begin[0] + h, begin[1]:begin[1] + w] = xh
    return xp


def _fill_cols(dst: np.ndarray, xs: np.ndarray, row0: int, row_step: int, col0: int, sw: int, dw: int) -> None:
    """Fill the zeroed columns ``dst`` (N, T, OW, KW', C) from the NHWC input ``xs`` (N, H, W, C):
    ``dst[:, t, q, j]`` is input row ``row0 + t*row_step``, column ``col0 + q*sw + j*dw``, or stays
    zero where that cell is padding. One strided copy per kernel column."""
    rows, ow, kwc = dst.shape[1:4]
    h, w = xs.shape[1:3]
    t_lo = max(0, -(row0 // row_step)) if row0 < 0 else 0
    t_hi = min(rows, (h - 1 - row0) // row_step + 1) if row0 <= h - 1 else 0
    if t_lo >= t_hi:
        return
    ra = row0 + t_lo * row_step
    rs = slice(ra, ra + (t_hi - t_lo - 1) * row_step + 1, row_step)
    for j in range(kwc):
        c0 = col0 + j * dw
        q_lo = max(0, -(c0 // sw)) if c0 < 0 else 0
        q_hi = min(ow, (w - 1 - c0) // sw + 1) if c0 <= w - 1 else 0
        if q_lo < q_hi:
            ca = c0 + q_lo * sw
            dst[:, t_lo:t_hi, q_lo:q_hi, j] = xs[:, rs, ca:ca + (q_hi - q_lo - 1) * sw + 1:sw]


def _matmul(a: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:
    """``out[...] = a @ w``. A ``w`` that is a transposed view (an OHWI weight kept in place) with
    few rows of ``a`` goes as ``(w.T @ a.T).T``: OpenBLAS takes twice as long on the transposed
    operand there (measured); for many rows both are the same."""
    if a.shape[0] == 1:  # one row: a matrix-vector product (gemv reads the weight once, in order)
        out[0] = np.matmul(w.T, a[0]) if not w.flags.c_contiguous else np.matmul(a[0], w)
    elif w.flags.c_contiguous or a.shape[0] >= 256:
        np.matmul(a, w, out=out)
    else:
        out[...] = np.matmul(w.T, a.T).T


def _blocks(n: int, rows: int, per_row: int, block: int | None = None):
    """(sample slice, row slice) blocks of about _BLOCK elements: whole samples while a sample fits,
    else row bands of one sample (the number of blocks follows the work, not the call)."""
    block = _BLOCK if block is None else block
    per_sample = rows * per_row
    if per_sample <= block:
        step = max(1, block // max(1, per_sample))
        for i in range(0, n, step):
            yield slice(i, i + step), slice(None)
    else:
        band = max(1, block // max(1, per_row))
        for i in range(n):
            for r in range(0, rows, band):
                yield slice(i, i + 1), slice(r, r + band)


def _adt_conv(node: Node, opset: int, consts) -> Fn:
    """2-D Conv on a packed weight (see adt.runtime.graph_rewrites) with the bias, the activation and
    a residual Add fused: ``act(conv(x) + b [+ r])`` or ``act(conv(x) + b) + r`` (``act_first``)."""
    wshape = _packed_weight_shape(node)
    packing = Packing(_int(node, "packing", 0))
    dense = packing in (Packing.GEMM, Packing.OHWI)  # group 1
    group = _int(node, "group", 1)
    act = _act_of(node)
    act_first = bool(_int(node, "act_first", 0))
    m, cg, kh, kw = wshape
    geo: dict[tuple, tuple] = {}  # input shape -> geometry (attributes are resolved once per shape)

    def geometry(shape):
        g = geo.get(shape)
        if g is None:
            if len(shape) != 4:
                raise AdtExecutionError(f"{node.label()}: input rank {len(shape)} != weight rank 4")
            if shape[1] != cg * group:
                raise AdtExecutionError(f"{node.label()}: input has {shape[1]} channels, weight {list(wshape)} with "
                                        f"group={group} expects {cg * group}")
            kernel, strides, dil, begin, end, out = _conv_geometry(node, shape, wshape)
            # the kernel taps that read at least one input cell (not only padding) for some output: a
            # range per axis; the others multiply zeros and are skipped (a 3x3 conv on a 1x1 map is
            # its centre tap: 1/9 of the work and of the weight reads)
            crop = []
            for k, st_, d, o, b_, n_ in zip(kernel, strides, dil, out, begin, shape[2:]):
                useful = [i for i in range(k) if (o - 1) * st_ + i * d >= b_ and i * d < b_ + n_]
                crop.append((useful[0], useful[-1] + 1) if useful else (0, 0))
            g = (kernel, strides, dil, begin, end, out, tuple(crop))
            if len(geo) >= 8:
                geo.pop(next(iter(geo)))
            geo[shape] = g
        return g

    def epilogue(yb, b, rb, use_act=True):
        if b is not None:
            yb += b
        if use_act and act is not None and (act_first or rb is None):
            act(yb)
        if rb is not None:
            yb += rb
            if use_act and act is not None and not act_first:
                act(yb)

    def run(x, wp, b=None, r=None):
        if r is None:
            return compute(x, wp, b, None, True)
        n, m_out = x.shape[0], m
        oh, ow = geometry(x.shape)[5]
        if r.shape == (n, m_out, oh, ow) and r.dtype == np.result_type(x, wp):
            return compute(x, wp, b, r.transpose(0, 2, 3, 1), True)  # NHWC view, whatever its memory order
        # broadcasting or another dtype: the plain Add (and the activation after it) on the conv output
        (y,) = compute(x, wp, b, None, act_first)
        out = np.add(y, r)
        if act is not None and not act_first:
            act(out)
        return (out,)

    def compute(x, wp, b, rh, use_act):
        n, c = x.shape[:2]
        kernel, (sh, sw), (dh, dw), begin, end, (oh, ow), ((i0, i1), (j0, j1)) = geometry(x.shape)
        dtype = np.result_type(x, wp)
        y = np.empty((n, oh, ow, m), dtype=dtype)
        if packing == Packing.DEPTHWISE:
            # depthwise: per block, the windows contracted with the taps, vectorized over samples,
            # positions and channels (einsum reads the strided window view; measured faster than
            # a tap loop of shifted slices and than copied columns). Each block pads its own input rows
            # into a small buffer (no padded copy of the whole, often large, input)
            xh = x.transpose(0, 2, 3, 1)
            h, w_ = xh.shape[1:3]
            _check_pad_growth(x, begin, end, node)
            wpad = w_ + begin[1] + end[1]
            for sn, sr in _blocks(n, oh, ow * kh * kw * c, _DW_BLOCK):
                yb = y[sn, sr]
                r0 = sr.start or 0
                r1 = r0 + yb.shape[1]
                lo, hi = r0 * sh, (r1 - 1) * sh + (kh - 1) * dh + 1  # padded input rows of this block
                src = xh[sn, max(lo - begin[0], 0):max(min(hi - begin[0], h), 0)]
                if any(begin) or any(end):
                    pb = np.zeros((src.shape[0], hi - lo, wpad, c), dtype=x.dtype)
                    top = max(begin[0] - lo, 0)
                    pb[:, top:top + src.shape[1], begin[1]:begin[1] + w_] = src
                else:
                    pb = src
                s0, s1, s2, s3 = pb.strides
                win = as_strided(pb, (pb.shape[0], r1 - r0, ow, kh, kw, c),
                                 (s0, sh * s1, sw * s2, dh * s1, dw * s2, s3), writeable=False)
                np.einsum("nhwijc,ijc->nhwc", win, wp, out=yb)
                epilogue(yb, b, None if rh is None else rh[sn, sr], use_act)
            return (y.transpose(0, 3, 1, 2),)
        if kh == kw == 1 and dense:  # 1x1: the (strided) input itself is the column matrix
            xp = _nhwc_padded(x, begin, end, node)
            wm = wp if packing == Packing.GEMM else wp.reshape(m, c).T
            src = xp[:, ::sh, ::sw][:, :oh, :ow]
            if not src.flags.c_contiguous:
                src = np.ascontiguousarray(src)
            a = src.reshape(-1, c)
            y2 = y.reshape(-1, m)
            r2 = None if rh is None else rh.reshape(-1, m) if rh.flags.c_contiguous else None
            step = max(1, _BLOCK_1X1 // max(c, m))
            if rh is not None and r2 is None:  # a residual in another memory order: by (sample, row) blocks
                for sn, sr in _blocks(n, oh, ow * max(c, m), _BLOCK_1X1):
                    yb = y[sn, sr]
                    rows = yb.shape[0] * yb.shape[1] * ow
                    _matmul(src[sn, sr].reshape(rows, c), wm, yb.reshape(rows, m))
                    epilogue(yb, b, rh[sn, sr], use_act)
                return (y.transpose(0, 3, 1, 2),)
            for i in range(0, a.shape[0], step):
                blk = y2[i:i + step]
                _matmul(a[i:i + step], wm, blk)
                epilogue(blk, b, None if r2 is None else r2[i:i + step], use_act)
            return (y.transpose(0, 3, 1, 2),)
        if dense:
            # group 1: one product per useful kernel row i, over columns along the kernel's width only
            # (KW*C per output position), accumulated. With vertical stride and dilation 1 the rows of
            # one column copy serve every kernel row (row-shifted slices, contiguous for one sample):
            # a third of full im2col's copying for 3x3
            khc, kwc = i1 - i0, j1 - j0
            if khc <= 0 or kwc <= 0:  # every tap reads padding only
                y[...] = 0
                epilogue(y, b, rh, use_act)
                return (y.transpose(0, 3, 1, 2),)
            if khc == kh and kwc == kw and n * oh * ow <= _FEW_ROWS:
                # a small output (late layers at batch 1): full columns and ONE product, so the weight
                # (large there) is read once, in order, instead of once per kernel row
                xp = _nhwc_padded(x, begin, end, node)
                cols = np.ascontiguousarray(as_strided(xp, (n, oh, ow, kh, kw, c), (xp.strides[0], sh * xp.strides[1],
                                                       sw * xp.strides[2], dh * xp.strides[1], dw * xp.strides[2],
                                                       xp.strides[3]), writeable=False)).reshape(n * oh * ow, -1)
                _matmul(cols, wp if packing == Packing.GEMM else wp.reshape(m, -1).T, y.reshape(-1, m))
                epilogue(y, b, rh, use_act)
                return (y.transpose(0, 3, 1, 2),)
            if packing == Packing.GEMM:
                wk = wp.reshape(kh, kw * c, m)
                wrows = [wk[i, j0 * c:j1 * c] for i in range(i0, i1)]
            else:  # OHWI kept in place: kernel row i is a (M, KW'*C) view, taken transposed
                wrows = [wp[:, i, j0:j1].reshape(m, kwc * c).T for i in range(i0, i1)]
            # the columns of each block are filled straight from the input (zeros where a tap reads
            # padding): no padded copy of the whole input
            xh = x.transpose(0, 2, 3, 1)
            shared = sh == 1 and dh == 1
            col0 = j0 * dw - begin[1]
            tmp = None
            for sn, sr in _blocks(n, oh, ow * kwc * c * (1 if shared else khc)):
                yb = y[sn, sr]
                nb, rb = yb.shape[:2]
                r0 = sr.start or 0
                y2 = yb.reshape(-1, m)
                if khc > 1 and (tmp is None or tmp.shape[0] < y2.shape[0]):
                    tmp = np.empty((y2.shape[0], m), dtype=dtype)
                if shared:
                    cw = np.zeros((nb, rb + khc - 1, ow, kwc, c), dtype=dtype)
                    _fill_cols(cw, xh[sn], r0 + i0 - begin[0], 1, col0, sw, dw)
                else:
                    cw = np.empty((nb, rb, ow, kwc, c), dtype=dtype)
                for i in range(khc):
                    if shared:
                        a = cw[:, i:i + rb].reshape(-1, kwc * c)
                    else:
                        cw[...] = 0
                        _fill_cols(cw, xh[sn], r0 * sh + (i0 + i) * dh - begin[0], sh, col0, sw, dw)
                        a = cw.reshape(-1, kwc * c)
                    if i == 0:
                        _matmul(a, wrows[0], y2)
                    else:
                        t = tmp[:y2.shape[0]]
                        _matmul(a, wrows[i], t)
                        y2 += t
                epilogue(yb, b, None if rh is None else rh[sn, sr], use_act)
            return (y.transpose(0, 3, 1, 2),)
        xp = _nhwc_padded(x, begin, end, node)
        # depthwise and grouped: every (dilated, strided) window as a view (N, OH, OW, KH, KW, C)
        st = xp.strides
        win = as_strided(xp, (n, oh, ow, kh, kw, c), (st[0], sh * st[1], sw * st[2], dh * st[1], dw * st[2], st[3]),
                         writeable=False)
        K = kh * kw * c
        mg = m // group  # grouped: per block, one batched product over the groups
        win = win.reshape((n, oh, ow, kh, kw, group, cg)).transpose(0, 1, 2, 5, 3, 4, 6)  # (N,OH,OW,G,kh,kw,cg)
        for sn, sr in _blocks(n, oh, ow * K):
            yb = y[sn, sr]
            rows = yb.shape[0] * yb.shape[1] * ow
            cols = np.ascontiguousarray(win[sn, sr]).reshape(rows, group, kh * kw * cg)
            yb.reshape(rows, group, mg)[...] = np.matmul(cols.transpose(1, 0, 2), wp).transpose(1, 0, 2)
            epilogue(yb, b, None if rh is None else rh[sn, sr], use_act)
        return (y.transpose(0, 3, 1, 2),)
    return run


def _adt_gemm(node, opset, consts) -> Fn:
    """Gemm with a fused activation (the rewrite only makes it when one follows)."""
    gemm = _gemm(node, opset, consts)
    act = _act_of(node)

    def run(a, b, c=None):
        (y,) = gemm(a, b, c)
        if act is not None:
            if not y.flags.writeable or y is a or y is b or y is c:
                y = y.copy()
            act(y)
        return (y,)
    return run


def _s_adt_conv(node, opset, x, w, b=None, r=None):
    (y,) = _s_conv(node, opset, x, Val(_packed_weight_shape(node), w.dtype), b)
    if r is None:
        return [y]
    return [Val(_bcast(y.shape, r.shape), _rt(y, r))]


def _s_adt_gemm(node, opset, a, b, c=None):
    return _s_gemm(node, opset, a, b, c)


#: The engine's internal ops (domain adt.runtime.graph_rewrites.INTERNAL_DOMAIN), made only by the
#: load-time rewrites: never looked up for a node of a stored graph.
INTERNAL_OPS: dict[str, Callable[[Node, int, Mapping], Fn]] = {CONV_OP: _adt_conv, GEMM_OP: _adt_gemm}


OPS: dict[str, Callable[[Node, int, Mapping], Fn]] = {
    "Conv": _conv,
    "MaxPool": lambda n, o, c: _pool(n, o, c, "max"),
    "AveragePool": lambda n, o, c: _pool(n, o, c, "avg"),
    "GlobalAveragePool": _global_pool("avg"),
    "GlobalMaxPool": _global_pool("max"),
    "Gemm": _gemm,
    "MatMul": _binary(np.matmul),
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
    "Relu": _unary(_relu),
    "Sigmoid": _unary(_sigmoid),
    "Tanh": _unary(np.tanh),
    "LeakyRelu": _leaky_relu,
    "Clip": _clip,
    "Softmax": _softmax(False),
    "LogSoftmax": _softmax(True),
    "BatchNormalization": _batchnorm,
    "Flatten": _flatten,
    "Reshape": _reshape,
    "Transpose": _transpose,
    "Concat": _concat,
    "Shape": _shape,
    "Gather": _gather,
    "Unsqueeze": _unsqueeze,
    "Squeeze": _squeeze,
    "Constant": _constant,
    "Identity": _identity,
    "Dropout": _dropout,
}


# -- graph validation -----------------------------------------------------------------------------
# op -> (required inputs, most inputs (None: variadic, every slot required), outputs the op can produce).
# Input slots past the required ones are optional and may be empty names; an output slot past the
# last one the op produces is a "ghost": nothing will ever be stored under that name.
ARITY: dict[str, tuple[int, int | None, int]] = {
    "Conv": (2, 3, 1), "MaxPool": (1, 1, 2), "AveragePool": (1, 1, 1), "GlobalAveragePool": (1, 1, 1),
    "GlobalMaxPool": (1, 1, 1), "Gemm": (2, 3, 1), "MatMul": (2, 2, 1), "Add": (2, 2, 1), "Sub": (2, 2, 1),
    "Mul": (2, 2, 1), "Div": (2, 2, 1), "Relu": (1, 1, 1), "Sigmoid": (1, 1, 1), "Tanh": (1, 1, 1),
    "LeakyRelu": (1, 1, 1), "Clip": (1, 3, 1), "Softmax": (1, 1, 1), "LogSoftmax": (1, 1, 1),
    "BatchNormalization": (5, 5, 3), "Flatten": (1, 1, 1), "Reshape": (2, 2, 1), "Transpose": (1, 1, 1),
    "Concat": (1, None, 1), "Shape": (1, 1, 1), "Gather": (2, 2, 1), "Unsqueeze": (1, 2, 1),
    "Squeeze": (1, 2, 1), "Constant": (0, 0, 1), "Identity": (1, 1, 1), "Dropout": (1, 3, 2),
}


def _node_where(i: int, node: Node) -> str:
    return f"{node.label()} (node #{i})"


def _graph_error(message: str) -> AdtGraphError:
    return AdtGraphError(f"architecture: {message}")


def validate_graph(graph: Graph, weight_names: Iterable[str] = ()) -> list[int]:
    """Check the graph's structure once, at load, and return a topological order of its nodes.

    Values are: the graph inputs, the stored weights (``weight_names``), the graph initializers and
    the node outputs. Each is assigned once (no duplicate input or initializer, no node output that
    is produced twice or shadows an input, initializer or weight); every non-empty node input names a
    value; empty input names only fill optional slots (for the ops the NumPy engine knows); no node or
    graph output reads an output slot its op never produces; every graph output is a value; there is
    no cycle. Any violation raises :class:`AdtGraphError` naming the node (op, name or first output,
    index) and the tensor. Ops the NumPy engine does not know get the structural checks only."""
    nodes = graph.nodes
    seen_inputs: set[str] = set()
    for vi in graph.inputs:
        if vi.name in seen_inputs:
            raise _graph_error(f"graph input {vi.name!r} is declared twice")
        seen_inputs.add(vi.name)
    seen_inits: set[str] = set()
    for t in graph.initializers:
        if not t.name:
            raise _graph_error("a graph initializer has no name")
        if t.name in seen_inits:
            raise _graph_error(f"graph initializer {t.name!r} is defined twice")
        seen_inits.add(t.name)
    available = seen_inputs | seen_inits | set(weight_names)
    producer: dict[str, int] = {}
    ghosts: dict[str, int] = {}   # an output slot past what its op produces -> node index
    for i, n in enumerate(nodes):
        arity = ARITY.get(n.op_type) if n.domain in ("", "ai.onnx") else None
        for j, o in enumerate(n.outputs):
            if not o:
                continue
            if o in producer:
                raise _graph_error(f"{_node_where(i, n)}: output {o!r} is defined twice (it is also an output "
                                   f"of {_node_where(producer[o], nodes[producer[o]])})")
            if o in available:
                what = ("a graph input" if o in seen_inputs else "a graph initializer" if o in seen_inits
                        else "a stored weight")
                raise _graph_error(f"{_node_where(i, n)}: output {o!r} is defined twice (it is also {what})")
            producer[o] = i
            if arity is not None and j >= arity[2]:
                ghosts[o] = i
        if arity is not None:
            required, most, _ = arity
            if len(n.inputs) < required:
                raise _graph_error(f"{_node_where(i, n)}: has {len(n.inputs)} inputs, {n.op_type} needs {required}")
            if most is not None and len(n.inputs) > most:
                raise _graph_error(f"{_node_where(i, n)}: has {len(n.inputs)} inputs, {n.op_type} takes at most {most}")
            for j, name in enumerate(n.inputs):
                if not name and (most is None or j < required):
                    raise _graph_error(f"{_node_where(i, n)}: input {j} has an empty name, but it is not optional")
    deps: list[set[int]] = []
    users: list[list[int]] = [[] for _ in nodes]
    for i, n in enumerate(nodes):
        d = set()
        for name in n.inputs:
            if not name or name in available:
                continue
            if name not in producer:
                raise _graph_error(
                    f"{_node_where(i, n)}: input {name!r} is neither a graph input, a stored weight, an initializer "
                    f"nor the output of a node")
            if name in ghosts:
                k = ghosts[name]
                raise _graph_error(f"{_node_where(i, n)}: input {name!r} is output {nodes[k].outputs.index(name)} of "
                                   f"{_node_where(k, nodes[k])}, which {nodes[k].op_type} never produces")
            d.add(producer[name])
        deps.append(d)
        for j in d:
            users[j].append(i)
    for vi in graph.outputs:
        if vi.name in ghosts:
            k = ghosts[vi.name]
            raise _graph_error(f"graph output {vi.name!r} is output {nodes[k].outputs.index(vi.name)} of "
                               f"{_node_where(k, nodes[k])}, which {nodes[k].op_type} never produces")
        if vi.name not in producer and vi.name not in available:
            raise _graph_error(f"graph output {vi.name!r} is not produced by any node")
    remaining = [len(d) for d in deps]
    ready = [i for i, r in enumerate(remaining) if r == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            remaining[u] -= 1
            if remaining[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):
        stuck = [_node_where(i, nodes[i]) for i in range(len(nodes)) if remaining[i] > 0][:3]
        raise _graph_error(f"the graph has a cycle (involving {', '.join(stuck)})")
    return order


def topological_order(nodes: Sequence[Node], available: set[str]) -> list[int]:
    """Node indices in an order where every input is produced before it is read (stable: the file's
    order wherever it is already valid). Raises AdtGraphError (an AdtArchitectureError) for undefined
    inputs, values defined twice or cycles (:func:`validate_graph` without graph inputs/outputs)."""
    return validate_graph(Graph(nodes=list(nodes)), available)


# -- shape inference and the execution budget -----------------------------------------------------
# Every op has a shape rule here, the same rule its kernel above applies: from the shapes (and,
# where the op reads them, the values: Reshape's shape, Unsqueeze/Squeeze axes) of its inputs, the
# shapes and dtypes of its outputs, checked before anything is computed. Small values (shape
# arithmetic: Shape -> Gather -> Concat -> Reshape) are computed on the way, after their own check.
_VALUE_MAX = 1 << 12  # elements: a value this small is computed during inference (shape arithmetic)


class _Dynamic(AdtExecutionError):
    """Inference needs a value that only the run knows (a Reshape target computed from the data); the
    plan stops there and the run infers the rest just before each op (typed, should it ever escape)."""


class Val:
    """What inference knows of a tensor: its shape, dtype and, when known and small, its value."""
    __slots__ = ("shape", "dtype", "value")

    def __init__(self, shape, dtype, value=None):
        self.shape = tuple(int(d) for d in shape)
        self.dtype = np.dtype(dtype)
        self.value = value

    @classmethod
    def of(cls, a) -> "Val":
        a = np.asarray(a)
        return cls(a.shape, a.dtype, a)

    @property
    def nbytes(self) -> int:  # Python ints: no overflow on a 32-bit intp
        return prod(self.shape) * self.dtype.itemsize

    @property
    def ndim(self) -> int:
        return len(self.shape)


def _need(node: Node, v: Val | None, what: str) -> np.ndarray:
    if v is None or v.value is None:
        raise _Dynamic(f"{node.label()}: {what}")
    return v.value


def _bcast(*shapes) -> tuple[int, ...]:
    """NumPy broadcasting of shapes (ValueError when they do not broadcast), in Python ints."""
    r = max(len(s) for s in shapes)
    out = []
    for i in range(r):
        dims = {s[len(s) - r + i] for s in shapes if len(s) - r + i >= 0}
        dims.discard(1)
        if len(dims) > 1:
            raise ValueError(f"shapes {[list(s) for s in shapes]} do not broadcast")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def _rt(*vals) -> np.dtype:
    return np.result_type(*[v.dtype for v in vals if v is not None])


def _s_conv(node, opset, x, w, b=None):
    if x.ndim != w.ndim:
        raise AdtExecutionError(f"{node.label()}: input rank {x.ndim} != weight rank {w.ndim}")
    if x.ndim < 3:
        raise AdtExecutionError(f"{node.label()}: input of rank {x.ndim} does not fit a kernel of {w.ndim - 2} dims")
    group = _int(node, "group", 1)
    kernel = list(w.shape[2:])
    kernel_attr = _ints(node, "kernel_shape", None)
    if kernel_attr and list(kernel_attr) != kernel:
        raise AdtArchitectureError(f"{node.label()}: kernel_shape {kernel_attr} != weight dims {kernel}")
    n, c = x.shape[:2]
    m = w.shape[0]
    if group < 1 or c != w.shape[1] * group or m % group:
        raise AdtExecutionError(
            f"{node.label()}: input has {c} channels, weight {list(w.shape)} with group={group} expects "
            f"{w.shape[1] * group}")
    strides, dil = _geometry(node, x.ndim, kernel)
    begin, end, out, _ = _pads(node, x.shape[2:], kernel, strides, dil)
    if b is not None and prod(b.shape) != m:
        raise ValueError(f"bias of shape {list(b.shape)} does not fit {m} output channels")
    return [Val((n, m) + tuple(out), _rt(x, w))]


def _pool_shape(node, opset, x, kernel, ceil_mode):
    strides, dil = _geometry(node, x.ndim, kernel)
    return _pads(node, x.shape[2:], kernel, strides, dil, ceil_mode)


def _s_pool(node, opset, x):
    kernel = _ints(node, "kernel_shape", None)
    _, _, out, _ = _pool_shape(node, opset, x, kernel, bool(_int(node, "ceil_mode", 0)))
    return [Val(x.shape[:2] + tuple(out), x.dtype)]


def _s_global_pool(node, opset, x):
    if x.ndim < 2:
        raise ValueError(f"input of rank {x.ndim} has no channels")
    return [Val(x.shape[:2] + (1,) * (x.ndim - 2), x.dtype)]


def _s_gemm(node, opset, a, b, c=None):
    if a.ndim != 2 or b.ndim != 2:
        raise AdtExecutionError(f"{node.label()}: Gemm needs 2-D A and B, got {list(a.shape)} and {list(b.shape)}")
    ta, tb = _int(node, "transA", 0), _int(node, "transB", 0)
    (m, k), (k2, n) = a.shape[::-1] if ta else a.shape, b.shape[::-1] if tb else b.shape
    if k != k2:
        raise ValueError(f"matmul: inner dimensions {k} and {k2} differ")
    if c is not None and _bcast((m, n), c.shape) != (m, n):
        raise ValueError(f"C of shape {list(c.shape)} does not broadcast to {[m, n]}")
    return [Val((m, n), _rt(a, b, c))]


def _s_matmul(node, opset, a, b):
    sa, sb = a.shape, b.shape
    if not sa or not sb:
        raise ValueError("matmul: an input is a scalar")
    a2 = (1,) + sa if len(sa) == 1 else sa
    b2 = sb + (1,) if len(sb) == 1 else sb
    if a2[-1] != b2[-2]:
        raise ValueError(f"matmul: inner dimensions {a2[-1]} and {b2[-2]} differ")
    out = _bcast(a2[:-2], b2[:-2]) + (a2[-2], b2[-1])
    if len(sa) == 1:
        out = out[:-2] + out[-1:]
    if len(sb) == 1:
        out = out[:-1]
    return [Val(out, _rt(a, b))]


def _s_binary(node, opset, a, b):
    return [Val(_bcast(a.shape, b.shape), _rt(a, b))]


def _s_same(node, opset, x, *rest):
    return [Val(x.shape, x.dtype)]


def _s_clip(node, opset, x, lo=None, hi=None):
    return [Val(_bcast(*[v.shape for v in (x, lo, hi) if v is not None]), x.dtype)]


def _s_softmax(node, opset, x):
    axis = _int(node, "axis", -1 if opset >= 13 else 1)
    if not -x.ndim <= axis < max(x.ndim, 1):
        raise AdtExecutionError(f"{node.label()}: axis {axis} out of range for rank {x.ndim}")
    return [Val(x.shape, x.dtype)]


def _s_batchnorm(node, opset, x, scale, bias, mean, var):
    c = _bcast(scale.shape, bias.shape, mean.shape, var.shape)
    if len(c) != 1:
        raise ValueError(f"BatchNormalization parameters must be vectors, got {list(scale.shape)}")
    if x.ndim < 2 or x.shape[1] != c[0]:
        raise AdtExecutionError(f"{node.label()}: input {list(x.shape)} does not have {c[0]} channels")
    return [Val(x.shape, np.result_type(x.dtype, F32))]


def _s_flatten(node, opset, x):
    axis = _int(node, "axis", 1)
    ax = axis + x.ndim if axis < 0 else axis
    if not 0 <= ax <= x.ndim:
        raise AdtExecutionError(f"{node.label()}: axis {axis} out of range for rank {x.ndim}")
    return [Val((prod(x.shape[:ax]), prod(x.shape[ax:])), x.dtype)]


def _s_reshape(node, opset, x, shape):
    return [Val(_reshape_target(node, x.shape, _need(node, shape, "Reshape target")), x.dtype)]


def _s_transpose(node, opset, x):
    perm = _ints(node, "perm", None)
    perm = list(perm) if perm else list(range(x.ndim))[::-1]
    if sorted(a + x.ndim if a < 0 else a for a in perm) != list(range(x.ndim)):
        raise ValueError(f"perm {perm} is not a permutation of {x.ndim} axes")
    return [Val([x.shape[a] for a in perm], x.dtype)]


def _s_concat(node, opset, *xs):
    xs = [x for x in xs if x is not None]
    axis = _int(node, "axis", None)
    r = xs[0].ndim if xs else 0
    if r == 0 or not -r <= axis < r or any(x.ndim != r for x in xs):
        raise ValueError(f"cannot concatenate ranks {[x.ndim for x in xs]} on axis {axis}")
    ax = axis + r if axis < 0 else axis
    for x in xs:
        if x.shape[:ax] + x.shape[ax + 1:] != xs[0].shape[:ax] + xs[0].shape[ax + 1:]:
            raise ValueError(f"cannot concatenate shapes {[list(x.shape) for x in xs]} on axis {axis}")
    out = list(xs[0].shape)
    out[ax] = sum(x.shape[ax] for x in xs)
    return [Val(out, _rt(*xs))]


def _s_shape(node, opset, x):
    start, end = _int(node, "start", 0), _int(node, "end", None)
    v = np.array(x.shape[start:end], dtype=np.int64)
    return [Val(v.shape, v.dtype, v)]


def _s_gather(node, opset, x, idx):
    axis = _int(node, "axis", 0)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for rank {x.ndim}")
    ax = axis + x.ndim if axis < 0 else axis
    return [Val(x.shape[:ax] + idx.shape + x.shape[ax + 1:], x.dtype)]


def _s_unsqueeze(node, opset, x, axes=None):
    out = list(x.shape)
    for a in _unsqueeze_axes(node, opset, None if axes is None else _need(node, axes, "Unsqueeze axes"), x.ndim):
        out.insert(a, 1)
    return [Val(out, x.dtype)]


def _s_squeeze(node, opset, x, axes=None):
    ax = _axes(node, opset, None if axes is None else _need(node, axes, "Squeeze axes"))
    if not ax:
        return [Val([d for d in x.shape if d != 1], x.dtype)]
    ax = tuple(a + x.ndim if a < 0 else a for a in ax)
    if any(not 0 <= a < x.ndim or x.shape[a] != 1 for a in ax):
        raise AdtExecutionError(f"{node.label()}: cannot squeeze axes {ax} of shape {list(x.shape)}")
    return [Val([d for i, d in enumerate(x.shape) if i not in ax], x.dtype)]


SHAPES: dict[str, Callable[..., list]] = {
    "Conv": _s_conv, "MaxPool": _s_pool, "AveragePool": _s_pool, "GlobalAveragePool": _s_global_pool,
    "GlobalMaxPool": _s_global_pool, "Gemm": _s_gemm, "MatMul": _s_matmul, "Add": _s_binary, "Sub": _s_binary,
    "Mul": _s_binary, "Div": _s_binary, "Relu": _s_same, "Sigmoid": _s_same, "Tanh": _s_same,
    "LeakyRelu": _s_same, "Clip": _s_clip, "Softmax": _s_softmax, "LogSoftmax": _s_softmax,
    "BatchNormalization": _s_batchnorm, "Flatten": _s_flatten, "Reshape": _s_reshape, "Transpose": _s_transpose,
    "Concat": _s_concat, "Shape": _s_shape, "Gather": _s_gather, "Unsqueeze": _s_unsqueeze,
    "Squeeze": _s_squeeze, "Identity": _s_same, "Dropout": _s_same,
}
_INTERNAL_SHAPES: dict[str, Callable[..., list]] = {CONV_OP: _s_adt_conv, GEMM_OP: _s_adt_gemm}


def _workspace(node: Node, ins: list, outs: list) -> int:
    """Bytes an op allocates besides its outputs while it runs (freed when it returns): the padded
    copy of Conv and pooling, Conv's im2col columns, pooling's partial reductions, Softmax's and
    Sigmoid's temporaries."""
    op = node.op_type
    x = ins[0] if ins else None
    if node.domain == INTERNAL_DOMAIN:
        if op != CONV_OP or x is None or not outs:
            return 0  # AdtGemm: the product only (its output is counted already)
        wshape = _packed_weight_shape(node)
        kernel, strides, dil, begin, end, out = _conv_geometry(node, x.shape, wshape)
        item = outs[0].dtype.itemsize
        padded = 0
        if any(begin) or any(end):
            padded = x.shape[0] * x.shape[1] * prod(n + b + e for n, b, e in zip(x.shape[2:], begin, end)) * item
        packing = Packing(_int(node, "packing", 0))
        dense = packing in (Packing.GEMM, Packing.OHWI)
        slack = 1 << 16  # small temporaries (scalars, views, a few rows)
        if prod(kernel) == 1:  # a padded, strided or non-NHWC input is copied into one column matrix
            return padded + x.shape[0] * x.shape[1] * prod(out) * item + slack
        per_row = out[-1] * prod(kernel) * x.shape[1]
        if packing == Packing.DEPTHWISE:  # one block's padded input rows (at most its windows' size)
            return max(_DW_BLOCK, per_row) * item + slack
        few = dense and x.shape[0] * prod(out) <= _FEW_ROWS
        if dense and not few:
            # one block of columns (filled from the unpadded input; plus the kernel-row halo), the copies
            # two consecutive row-shifted slices may take for the product, and the partial products
            block = max(_BLOCK, per_row)
            partial = (block // max(1, kernel[-1] * x.shape[1]) + out[-1]) * wshape[0]
            halo = kernel[0] * out[-1] * kernel[-1] * x.shape[1]
            return (4 * block + halo + partial) * item + slack
        # few output positions (all columns at once) or grouped (blocks of columns and the batched
        # product's result): the padded input copy too
        cols = x.shape[0] * prod(out) * prod(kernel) * x.shape[1] if few else max(_BLOCK, per_row)
        return padded + (2 * cols + x.shape[0] * prod(out) * wshape[0]) * item + slack
    if op in ("Conv", "MaxPool", "AveragePool") and x is not None:
        if op == "Conv":
            kernel = list(ins[1].shape[2:])
            strides, dil = _geometry(node, x.ndim, kernel)
            begin, end, out, _ = _pads(node, x.shape[2:], kernel, strides, dil)
            extra = [0] * len(out)
        else:
            kernel = _ints(node, "kernel_shape", None)
            begin, end, out, extra = _pool_shape(node, 0, x, kernel, bool(_int(node, "ceil_mode", 0)))
        padded = 0
        if any(begin) or any(end) or any(extra):
            padded = prod(x.shape[:2]) * prod(n + b + e + x_ for n, b, e, x_ in zip(x.shape[2:], begin, end, extra))
            padded *= x.dtype.itemsize
        if op != "Conv":  # one axis at a time: the partial result, and a large kernel's scan buffers
            dims = [n + b + e + x_ for n, b, e, x_ in zip(x.shape[2:], begin, end, extra)]
            stage, prev = 0, 0  # prev: the partial result this axis reads (0: the input or the padded copy)
            strides, dil = _geometry(node, x.ndim, kernel)
            for i, k in enumerate(kernel):
                other = prod(x.shape[:2]) * prod(dims) // max(1, dims[i])
                scan = _sliding_1d_bytes(other, dims[i], k, dil[i]) if k > _POOL_LOOP_MAX else 0
                dims[i] = out[i]
                last = i == len(kernel) - 1  # the last axis writes the output, counted already
                made = 0 if last else prod(x.shape[:2]) * prod(dims) * x.dtype.itemsize
                stage = max(stage, prev + scan + made)
                prev = made
            padded += stage
        if op == "Conv":  # one chunk of im2col columns (whole samples of C*K*L, at least one), and
            # the copy matmul makes of it for the stacked product (measured: traced peak = this figure)
            c, L, K = x.shape[1], prod(out), prod(kernel)
            per_sample = c * K * L
            step = max(1, _COLS_CHUNK // max(1, per_sample))
            padded += 2 * min(x.shape[0], step) * per_sample * x.dtype.itemsize
        return padded
    if op in ("Softmax", "LogSoftmax", "Sigmoid"):
        return 2 * sum(o.nbytes for o in outs)
    return 0


def infer_node(node: Node, opset: int, ins: list, fn: Fn | None = None) -> list[Val]:
    """The output :class:`Val` of ``node`` on inputs ``ins`` (``Val`` or None for an empty slot).
    Shapes that do not fit raise AdtExecutionError (naming the node and the input shapes); a value
    only the run can give raises ``_Dynamic``. With ``fn`` and small known inputs, the outputs'
    values are computed too (after the caller's budget check, by :meth:`NumpyEngine._values`)."""
    ins = list(ins)
    while ins and ins[-1] is None:
        ins.pop()
    if node.op_type == "Constant":
        return [Val.of(fn()[0])] if fn is not None else [Val.of(_constant(node, opset, {})()[0])]
    rule = _INTERNAL_SHAPES.get(node.op_type) if node.domain == INTERNAL_DOMAIN else SHAPES.get(node.op_type)
    if rule is None:
        raise _unsupported(node, f"op {node.op_type!r}")
    if any(v is None for v in ins[:1]):
        raise AdtExecutionError(f"{node.label()}: input 0 has no value")
    try:
        return rule(node, opset, *ins)
    except (AdtError, _Dynamic):
        raise
    except (ValueError, IndexError, TypeError, KeyError, OverflowError) as exc:
        shapes = [list(a.shape) if a is not None else None for a in ins]
        raise AdtExecutionError(f"{node.label()} failed on inputs of shapes {shapes}: {exc}") from None


def _budget_error(node: Node, what: str, need: int, limit: int) -> AdtBudgetError:
    return AdtBudgetError(f"{node.label()}: {what} would need {format_bytes(need)}, over the limit "
                          f"max_memory={format_bytes(limit)}; pass a larger max_memory to load it")


#: The largest array this platform's NumPy can allocate (2 GiB on a 32-bit build); a bigger output
#: is refused before anything is allocated, whatever max_memory (NumPy would raise ValueError).
MAX_ARRAY_BYTES = sys.maxsize


def _check_outputs(node: Node, outs: list, limit: int | None, names=None) -> None:
    for k, o in enumerate(outs):
        name = (names or node.outputs)[k] if k < len(names or node.outputs) else k
        if o.nbytes > MAX_ARRAY_BYTES:
            raise AdtBudgetError(f"{node.label()}: output {name!r} of shape {list(o.shape)} ({o.dtype}) would need "
                                 f"{format_bytes(o.nbytes)}, over the largest array this platform can hold "
                                 f"({format_bytes(MAX_ARRAY_BYTES)}, sys.maxsize bytes)")
        if limit is not None and o.nbytes > limit:
            raise _budget_error(node, f"output {name!r} of shape {list(o.shape)} ({o.dtype})", o.nbytes, limit)


def _c_order(a):
    """``a`` in C order (a 0-d array stays 0-d: np.ascontiguousarray would make it 1-d)."""
    return a if not isinstance(a, np.ndarray) or a.flags.c_contiguous else np.ascontiguousarray(a)


class ExecutionPlan:
    """What :func:`NumpyEngine.plan` found for one set of input shapes: ``peak`` (bytes of live
    intermediates at the worst step, inputs included), the node there, and ``dynamic_from``: the first
    step whose shapes depend on values only the run knows (None: every shape was inferred)."""
    __slots__ = ("peak", "peak_node", "dynamic_from", "live_at_dynamic")

    def __init__(self, peak, peak_node, dynamic_from, live_at_dynamic):
        self.peak, self.peak_node = peak, peak_node
        self.dynamic_from, self.live_at_dynamic = dynamic_from, live_at_dynamic


# -- the engine -----------------------------------------------------------------------------------
class NumpyEngine:
    """Compiled form of a parsed ONNX :class:`~adt.runtime.onnx_proto.OnnxModel` with its weights; ``run(feeds) -> outputs``.

    ``order``: the node order :func:`validate_graph` returned for this graph and these weights (the
    loader validates once); without it the graph is validated here. ``rewrites``: apply the load-time
    inference rewrites of :mod:`adt.runtime.graph_rewrites` (BatchNorm folding, fused bias and
    activation, packed conv weights; the results agree with the unrewritten graph up to float32
    rounding). ``own_weights``: the caller hands ``weights`` (a mutable mapping) over: a weight the
    rewrites replace is removed from it too, so no second copy stays alive; otherwise the new arrays
    are extra memory, counted against ``max_memory`` like folded constants (a rewrite that does not
    fit is skipped)."""

    def __init__(self, model: OnnxModel, weights: Mapping[str, np.ndarray], order: Sequence[int] | None = None,
                 max_memory: int | None = DEFAULT_MAX_MEMORY, rewrites: bool = True, own_weights: bool = False):
        g = model.graph
        opset = model.opset("")
        self.opset = opset
        self.max_memory = _check_limit(max_memory)
        if order is None:
            order = validate_graph(g, weights)
        consts: dict[str, np.ndarray] = {t.name: t.array for t in g.initializers}
        consts.update(weights)
        self.input_names = [vi.name for vi in g.inputs if vi.name not in consts]
        self.output_names = [vi.name for vi in g.outputs]
        steps: list[tuple[Fn, Node]] = []
        folded = 0  # bytes of every constant folded so far (all are kept)
        for i in order:
            node = g.nodes[i]
            if node.domain not in ("", "ai.onnx"):
                raise AdtUnsupportedOpError(
                    f"{node.label()}: op {node.op_type!r} of domain {node.domain!r} is not supported by the NumPy engine")
            factory = OPS.get(node.op_type)
            if factory is None:
                raise AdtUnsupportedOpError(
                    f"op {node.op_type!r} ({node.label()}) is not supported by the NumPy engine; "
                    f"supported ops: {', '.join(sorted(OPS))}")
            try:
                fn = factory(node, opset, consts)
            except AdtError:
                raise
            except (ValueError, IndexError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                raise AdtArchitectureError(f"{_node_where(i, node)}: invalid attributes: {exc}") from None
            if all(not n or n in consts for n in node.inputs):
                # constant subgraph (Constant nodes, shape arithmetic on constants): evaluate once now,
                # after the same shape check as a run (every folded constant is kept)
                ins = [Val.of(consts[n]) if n else None for n in node.inputs]
                outs = self._infer(node, ins, fn)
                _check_outputs(node, outs, self.max_memory)
                need = folded + sum(o.nbytes for o in outs) + _workspace(node, ins, outs)
                if self.max_memory is not None and need > self.max_memory:
                    raise _budget_error(node, "constant folding at load (every folded constant so far, this "
                                        "node's outputs and work space)", need, self.max_memory)
                for name, val in zip(node.outputs, self._call(fn, node, [consts.get(n) for n in node.inputs])):
                    if name:
                        consts[name] = val
                        folded += int(np.asarray(val).nbytes)
                continue
            steps.append((fn, node))
        if rewrites and steps:
            budget = None if self.max_memory is None else max(0, self.max_memory - folded)
            sources = [weights] if own_weights and hasattr(weights, "pop") else []
            new_nodes = rewrite([node for _, node in steps], consts, self.output_names, opset, sources, budget)
            fns = {id(node): fn for fn, node in steps}
            steps = []
            for node in new_nodes:
                fn = fns.get(id(node))
                if fn is None:
                    table = INTERNAL_OPS if node.domain == INTERNAL_DOMAIN else OPS
                    try:
                        fn = table[node.op_type](node, opset, consts)
                    except AdtError:
                        raise
                    except (ValueError, IndexError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                        raise AdtArchitectureError(f"{node.label()}: invalid attributes: {exc}") from None
                steps.append((fn, node))
        # free every intermediate after its last reader (a name read twice by one node, or by
        # several nodes, is freed once, after the last of them)
        last: dict[str, int] = {}
        for k, (_, node) in enumerate(steps):
            for n in node.inputs:
                if n and n not in consts:
                    last[n] = k
        keep = set(self.output_names)
        self._steps = [(fn, node, list(node.inputs),
                        [n for n in dict.fromkeys(node.inputs)
                         if n and last.get(n) == k and n not in keep and n not in consts])
                       for k, (fn, node) in enumerate(steps)]
        self._consts = consts
        self._nhwc_outputs = {o for _, node, _, _ in self._steps if node.domain == INTERNAL_DOMAIN
                              and node.op_type == CONV_OP for o in node.outputs}
        self._const_vals: dict[str, Val] | None = None
        self._plans: dict[tuple, ExecutionPlan] = {}

    def _infer(self, node: Node, ins: list, fn: Fn | None) -> list[Val]:
        return infer_node(node, self.opset, ins, fn)

    def _values(self, fn: Fn, node: Node, ins: list, outs: list) -> None:
        """Attach the values of small outputs whose inputs are all known (shape arithmetic)."""
        if node.op_type == "Constant" or all(o.value is not None for o in outs):
            return
        if sum(prod(o.shape) for o in outs) > _VALUE_MAX:
            return
        if any(v is not None and v.value is None for v in ins):
            return
        vals = self._call(fn, node, [None if v is None else v.value for v in ins])
        for o, v in zip(outs, vals):
            o.value = np.asarray(v)

    # -- the execution budget ---------------------------------------------------------------------
    def plan(self, feeds: Mapping[str, tuple]) -> ExecutionPlan:
        """Infer every intermediate shape for inputs of these shapes (``{name: (shape, dtype)}`` or
        arrays) and check them against ``max_memory`` before anything runs: each intermediate alone,
        and the peak of live intermediates (inputs included; weights and folded constants are not
        counted: the rebuild budget covers the weights) under the free-after-last-use schedule, plus
        each op's work space (padded copies, im2col columns). Raises AdtBudgetError naming the node,
        the output shape, the bytes and the limit; AdtExecutionError when shapes do not fit. Cached
        per input shapes."""
        specs = {}
        for name, f in feeds.items():
            shape, dtype = (f.shape, f.dtype) if hasattr(f, "shape") else f
            specs[name] = (tuple(int(d) for d in shape), np.dtype(dtype))
        key = tuple(sorted((n, s, d.str) for n, (s, d) in specs.items()))
        p = self._plans.get(key)
        if p is not None:
            return p
        if self._const_vals is None:
            self._const_vals = {n: Val.of(a) for n, a in self._consts.items()}
        vals: dict[str, Val] = dict(self._const_vals)
        live = 0
        for name, (shape, dtype) in specs.items():
            v = Val(shape, dtype)
            vals[name] = v
            live += v.nbytes
        limit = self.max_memory
        if limit is not None and live > limit:
            name, (shape, dtype) = max(specs.items(), key=lambda kv: vals[kv[0]].nbytes)
            raise AdtBudgetError(f"input {name!r} of shape {list(shape)} ({dtype}): the inputs take "
                                 f"{format_bytes(live)}, over the limit max_memory={format_bytes(limit)}")
        peak, peak_node, dynamic = live, None, None
        for k, (fn, node, ins, free) in enumerate(self._steps):
            in_vals = [vals.get(n) if n else None for n in ins]
            try:
                outs = self._infer(node, in_vals, fn)
            except _Dynamic:
                dynamic = k
                break
            live = self._account(node, in_vals, outs, live, free, vals)
            if live[1] > peak:
                peak, peak_node = live[1], node
            live = live[0]
            self._values(fn, node, in_vals, outs)
        if dynamic is None:
            # a graph output a fused conv wrote (NHWC memory) is copied to C order at the end of the run
            copies = [(n, vals[n]) for n in self.output_names if n in self._nhwc_outputs and n in vals]
            if copies:
                need = live + sum(v.nbytes for _, v in copies)
                if limit is not None and need > limit:
                    name, v = max(copies, key=lambda nv: nv[1].nbytes)
                    raise AdtBudgetError(f"graph output {name!r} of shape {list(v.shape)}: its copy in C order at the "
                                         f"end of the run would need {format_bytes(need)} with the outputs, over the "
                                         f"limit max_memory={format_bytes(limit)}; pass a larger max_memory to run it")
                if need > peak:
                    peak = need
        p = ExecutionPlan(peak, peak_node, dynamic, live)
        if len(self._plans) >= 16:
            self._plans.pop(next(iter(self._plans)))
        self._plans[key] = p
        return p

    def _account(self, node: Node, ins: list, outs: list, live: int, free: list, vals: dict) -> tuple[int, int]:
        """Check one step against the limit; returns (live bytes after it, bytes while it runs)."""
        limit = self.max_memory
        _check_outputs(node, outs, limit)
        made = sum(o.nbytes for o in outs)
        now = live + made + _workspace(node, ins, outs)
        if limit is not None and now > limit:
            o = max(outs, key=lambda v: v.nbytes) if outs else None
            name = node.outputs[outs.index(o)] if o is not None and outs.index(o) < len(node.outputs) else "?"
            raise _budget_error(node, f"running the graph, the live intermediates at this node (its output {name!r} of "
                                f"shape {list(o.shape) if o is not None else []}, the tensors still to be read and the "
                                f"op's work space)", now, limit)
        for name, o in zip(node.outputs, outs):
            if name:
                vals[name] = o
        live += sum(o.nbytes for name, o in zip(node.outputs, outs) if name)
        live -= sum(vals[n].nbytes for n in free if n in vals)
        return live, now

    @staticmethod
    def _call(fn: Fn, node: Node, args: list) -> tuple:
        while args and args[-1] is None:  # trailing optional inputs left out
            args.pop()
        try:
            outs = fn(*args)
        except AdtError:
            raise
        except MemoryError:
            shapes = [list(a.shape) if a is not None else None for a in args]
            raise AdtExecutionError(f"{node.label()}: out of memory on inputs of shapes {shapes}") from None
        except (ValueError, IndexError, TypeError, KeyError, AttributeError, OverflowError, ZeroDivisionError,
                FloatingPointError) as exc:
            shapes = [list(getattr(a, "shape", ())) if a is not None else None for a in args]
            raise AdtExecutionError(f"{node.label()} failed on inputs of shapes {shapes}: {exc}") from None
        return outs

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        plan = self.plan(feeds)  # AdtBudgetError / AdtExecutionError before anything runs
        values = dict(self._consts)
        values.update(feeds)
        live, dyn = plan.live_at_dynamic, plan.dynamic_from
        vals: dict[str, Val] = {}
        for k, (fn, node, ins, free) in enumerate(self._steps):
            try:
                args = [values[n] if n else None for n in ins]
            except KeyError as exc:  # unreachable for a validated graph and complete feeds
                raise AdtExecutionError(f"{node.label()}: input {exc.args[0]!r} has no value") from None
            if dyn is not None and k >= dyn:
                # shapes that depend on values: inferred now, from the actual inputs, before the op runs
                in_vals = [None if a is None else Val.of(a) for a in args]
                for n, a in zip(ins, in_vals):
                    if n and a is not None:
                        vals[n] = a
                live = self._account(node, in_vals, self._infer(node, in_vals, fn), live, free, vals)[0]
            outs = self._call(fn, node, args)
            for name, val in zip(node.outputs, outs):
                if name:
                    values[name] = val
            for n in free:
                del values[n]
        try:  # C order at the graph boundary (a conv's output lives in NHWC memory)
            return [_c_order(values[n]) for n in self.output_names]
        except KeyError as exc:  # unreachable for a validated graph
            raise AdtExecutionError(f"graph output {exc.args[0]!r} has no value") from None

