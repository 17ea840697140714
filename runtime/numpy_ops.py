"""More ONNX ops for the NumPy engine (issue 19: what real models need).

Each op is a factory ``(node, opset, consts) -> Fn`` (attributes resolved once, at load), an arity
entry and a shape rule, exactly like the ops of :mod:`adt.runtime.numpy_engine`, which merges
:data:`NEW_OPS`, :data:`NEW_ARITY` and :data:`NEW_SHAPES` into its ``OPS``, ``ARITY`` and ``SHAPES``
(so the onnxruntime engine, which runs only what the NumPy engine runs, gets them too).

Semantics are those of ONNX up to opset 17 (the runtime's contract, FORMAT.md); later forms that
are cheap and unambiguous are accepted too (the reductions' axes as an input, opset 18; Pad's
``axes`` input and ``wrap`` mode, opsets 18/19). What is refused raises a typed error naming the
node: :class:`~adt.runtime.errors.AdtUnsupportedOpError` for an attribute value the engine does not
implement (Split's ``num_outputs``, a Cast to bfloat16, float8 or string, ...),
:class:`~adt.runtime.format.AdtArchitectureError` for an invalid one, and
:class:`~adt.runtime.errors.AdtExecutionError` for inputs that do not fit.

LSTM and GRU (opset 14 definitions: every direction, layout, peepholes, ``sequence_lens``,
``initial_h``/``initial_c``, ``clip``, ``input_forget``, ``linear_before_reset``) project the whole
input sequence with one matmul and loop over the time steps in Python (a recurrence cannot be
vectorized over time); activations: Sigmoid, Tanh, Relu, Softsign, Softplus (the parametrized ones,
with ``activation_alpha``/``activation_beta``, are refused).

Shape rules are exact: the memory budget trusts them. An output shape that depends on a value only
the run knows (Slice starts computed from the data, a Range over a graph input, ...) raises the
engine's data-dependent marker, and the engine infers it just before the op runs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from math import prod
from typing import Callable, Sequence

import numpy as np

from .errors import AdtExecutionError
from .format import AdtArchitectureError
from . import numpy_engine as _engine
from .numpy_engine import F32, Fn, Val, _bcast, _float, _int, _ints, _need, _rt, _s_binary, _str, _unsupported
from .onnx_proto import A_TENSOR, DTYPE_NAMES, DTYPES, Node

# The tables this module adds to the engine's registries (at its end). ``adt.runtime`` imports this
# module, so the engine never runs without them; numpy_engine itself does not import it (no cycle).
NEW_OPS: dict[str, Callable] = {}
NEW_ARITY: dict[str, tuple[int, int | None, int]] = {}
NEW_SHAPES: dict[str, Callable[..., list]] = {}

__all__ = ["NEW_ARITY", "NEW_OPS", "NEW_SHAPES", "erf"]

#: "any number of outputs" in an ARITY entry (Split)
_MANY = 1 << 31


def _as_ints(node: Node, v, what: str) -> list[int]:
    a = np.asarray(v)
    if a.dtype.kind not in "iu":
        raise AdtExecutionError(f"{node.label()}: {what} must be integers, got {a.dtype}")
    return [int(i) for i in a.reshape(-1)]


def _norm_axes(node: Node, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
    """Axes made non-negative; out of range or repeated ones raise AdtExecutionError."""
    out = [a + rank if a < 0 else a for a in axes]
    if any(not 0 <= a < rank for a in out) or len(set(out)) != len(out):
        raise AdtExecutionError(f"{node.label()}: invalid {what} {list(axes)} for an input of rank {rank}")
    return out


# -- elementwise --------------------------------------------------------------------------------------
# erf: W. J. Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969),
# the coefficients of his CALERF routine (SPECFUN), evaluated in float64: max error ~1e-16 relative,
# far below float32 resolution. NumPy has no erf; math.erf per element would be a Python loop.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02, 3.20937758913846947e03,
          1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03, 2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01, 2.98635138197400131e02,
          8.81952221241769090e02, 1.71204761263407058e03, 2.05107837782607147e03, 1.23033935479799725e03,
          2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02, 1.62138957456669019e03,
          3.29079923573345963e03, 4.36261909014324716e03, 3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1, 1.60837851487422766e-2,
          6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1, 6.05183413124413191e-2,
          2.33520497626869185e-3)
_SQRT_PI_INV = 5.6418958354775628695e-1


def _exp_sq(y: np.ndarray) -> np.ndarray:
    """exp(-y*y) without the cancellation of forming y*y directly (Cody's split at 1/16)."""
    ysq = np.trunc(y * 16.0) / 16.0
    return np.exp(-ysq * ysq) * np.exp(-(y - ysq) * (y + ysq))


def erf(x) -> np.ndarray:
    """The error function of ``x``, elementwise, in float64 (Cody's rational approximations on
    |x| <= 0.5, 0.5 < |x| <= 4 and |x| > 4). NaN stays NaN."""
    x = np.asarray(x, dtype=np.float64)
    y = np.abs(x)
    out = np.empty_like(x)
    small = y <= 0.5
    mid = (y > 0.5) & (y <= 4.0)
    big = y > 4.0
    if small.any():
        xs = x[small]
        z = xs * xs
        num, den = _ERF_A[4] * z, z
        for i in range(3):
            num = (num + _ERF_A[i]) * z
            den = (den + _ERF_B[i]) * z
        out[small] = xs * (num + _ERF_A[3]) / (den + _ERF_B[3])
    if mid.any():
        ym = y[mid]
        num, den = _ERF_C[8] * ym, ym
        for i in range(7):
            num = (num + _ERF_C[i]) * ym
            den = (den + _ERF_D[i]) * ym
        erfc = _exp_sq(ym) * (num + _ERF_C[7]) / (den + _ERF_D[7])
        out[mid] = np.copysign(1.0 - erfc, x[mid])
    if big.any():
        yb = y[big]
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            z = 1.0 / (yb * yb)
            num, den = _ERF_P[5] * z, z
            for i in range(4):
                num = (num + _ERF_P[i]) * z
                den = (den + _ERF_Q[i]) * z
            r = z * (num + _ERF_P[4]) / (den + _ERF_Q[4])
            erfc = _exp_sq(yb) * (_SQRT_PI_INV - r) / yb
        erfc = np.where(np.isfinite(erfc), erfc, 0.0)  # |x| = inf: erfc 0
        out[big] = np.copysign(1.0 - erfc, x[big])
    nan = np.isnan(x)
    if nan.any():
        out[nan] = np.nan
    return out


def _need_float(node: Node, dtype: np.dtype) -> None:
    if np.dtype(dtype).kind != "f":
        raise AdtExecutionError(f"{node.label()}: {node.op_type} needs a floating-point input, got {np.dtype(dtype)}")


def _float_unary(fn: Callable[[np.ndarray], np.ndarray]):
    """An elementwise op defined for floating-point tensors only (Exp, Log, Sqrt): out-of-domain inputs
    give NaN/inf as in ONNX Runtime, without NumPy's warnings."""
    def factory(node: Node, opset: int, consts) -> Fn:
        def run(x):
            _need_float(node, x.dtype)
            with np.errstate(all="ignore"):
                return (fn(x),)
        return run
    return factory


def _s_float_same(node, opset, x):
    _need_float(node, x.dtype)
    return [Val(x.shape, x.dtype)]


def _numeric_unary(fn):
    def factory(node: Node, opset: int, consts) -> Fn:
        def run(x):
            if x.dtype == np.bool_:
                raise AdtExecutionError(f"{node.label()}: {node.op_type} is not defined for bool tensors")
            return (fn(x),)
        return run
    return factory


def _s_numeric_same(node, opset, x):
    if x.dtype == np.bool_:
        raise AdtExecutionError(f"{node.label()}: {node.op_type} is not defined for bool tensors")
    return [Val(x.shape, x.dtype)]


_ERF_CHUNK = 1 << 16  # elements per float64 pass: the temporaries stay ~3 MiB whatever the tensor


def _erf(node: Node, opset: int, consts) -> Fn:
    def run(x):
        if x.dtype == np.bool_:
            raise AdtExecutionError(f"{node.label()}: Erf is not defined for bool tensors")
        flat = x.reshape(-1)
        out = np.empty(flat.shape, x.dtype)
        for i in range(0, flat.size, _ERF_CHUNK):
            y = erf(flat[i:i + _ERF_CHUNK])
            out[i:i + _ERF_CHUNK] = y if x.dtype.kind == "f" else np.trunc(y)
        return (out.reshape(x.shape),)
    return run


def _hard_sigmoid(node: Node, opset: int, consts) -> Fn:
    alpha, beta = _float(node, "alpha", 0.2), _float(node, "beta", 0.5)

    def run(x):
        _need_float(node, x.dtype)
        t = x.dtype.type
        y = x * t(alpha)
        y += t(beta)
        np.clip(y, t(0), t(1), out=y)
        return (y,)
    return run


def _hard_swish(node: Node, opset: int, consts) -> Fn:
    def run(x):
        _need_float(node, x.dtype)
        t = x.dtype.type
        y = x * t(1 / 6)  # HardSigmoid(alpha=1/6, beta=0.5), then times x
        y += t(0.5)
        np.clip(y, t(0), t(1), out=y)
        y *= x
        return (y,)
    return run


def _pow(node: Node, opset: int, consts) -> Fn:
    def run(a, b):
        # the output has the base's type (opset 12+ mixes types); a float base takes the exponent
        # in its own precision (no float64 detour for a float32 base with an int64 exponent)
        if a.dtype.kind == "f" and b.dtype.kind in "iub":
            b = b.astype(a.dtype)
        if a.dtype.kind in "iu" and b.dtype.kind in "iu" and b.size and b.min() < 0:
            raise AdtExecutionError(f"{node.label()}: an integer base with a negative integer exponent")
        with np.errstate(all="ignore"):
            y = np.power(a, b)
        return (y if y.dtype == a.dtype else y.astype(a.dtype),)
    return run


def _s_pow(node, opset, a, b):
    if a.dtype == np.bool_:
        raise AdtExecutionError(f"{node.label()}: Pow is not defined for a bool base")
    return [Val(_bcast(a.shape, b.shape), a.dtype)]


def _mod(node: Node, opset: int, consts) -> Fn:
    fmod = _int(node, "fmod", 0)
    if fmod not in (0, 1):
        raise AdtArchitectureError(f"{node.label()}: fmod must be 0 or 1, got {fmod}")

    def run(a, b):
        # fmod=1: C fmod (the dividend's sign); fmod=0: the divisor's sign (Python's %), for floats too,
        # as ONNX's reference and its later test cases (opset 13 asked floats to set fmod=1)
        with np.errstate(all="ignore"):  # x mod 0 is undefined in ONNX; NumPy gives 0 (ints) or NaN
            return ((np.fmod if fmod else np.mod)(a, b),)
    return run


def _compare(fn):
    def factory(node: Node, opset: int, consts) -> Fn:
        return lambda a, b: (fn(a, b),)
    return factory


def _s_compare(node, opset, a, b):
    return [Val(_bcast(a.shape, b.shape), np.bool_)]


def _where(node: Node, opset: int, consts) -> Fn:
    def run(c, x, y):
        if c.dtype != np.bool_:
            raise AdtExecutionError(f"{node.label()}: the condition must be bool, got {c.dtype}")
        return (np.where(c, x, y),)
    return run


def _s_where(node, opset, c, x, y):
    if c.dtype != np.bool_:
        raise AdtExecutionError(f"{node.label()}: the condition must be bool, got {c.dtype}")
    return [Val(_bcast(c.shape, x.shape, y.shape), _rt(x, y))]


def _variadic(fn):
    """Min/Max: elementwise over any number of broadcast inputs."""
    def factory(node: Node, opset: int, consts) -> Fn:
        def run(*xs):
            y = xs[0]
            for x in xs[1:]:
                y = fn(y, x)
            return (y.copy() if y is xs[0] else y,)
        return run
    return factory


def _s_variadic(node, opset, *xs):
    if not xs or any(x is None for x in xs):
        raise AdtExecutionError(f"{node.label()}: needs at least one input, every slot given")
    return [Val(_bcast(*[x.shape for x in xs]), _rt(*xs))]


def _logical(fn):
    """And/Or/Xor: bool tensors, broadcast."""
    def factory(node: Node, opset: int, consts) -> Fn:
        def run(a, b):
            if a.dtype != np.bool_ or b.dtype != np.bool_:
                raise AdtExecutionError(
                    f"{node.label()}: {node.op_type} needs bool inputs, got {a.dtype} and {b.dtype}")
            return (fn(a, b),)
        return run
    return factory


def _s_logical(node, opset, a, b):
    if a.dtype != np.bool_ or b.dtype != np.bool_:
        raise AdtExecutionError(f"{node.label()}: {node.op_type} needs bool inputs, got {a.dtype} and {b.dtype}")
    return [Val(_bcast(a.shape, b.shape), np.bool_)]


def _not(node: Node, opset: int, consts) -> Fn:
    def run(x):
        if x.dtype != np.bool_:
            raise AdtExecutionError(f"{node.label()}: Not needs a bool input, got {x.dtype}")
        return (np.logical_not(x),)
    return run


def _s_not(node, opset, x):
    if x.dtype != np.bool_:
        raise AdtExecutionError(f"{node.label()}: Not needs a bool input, got {x.dtype}")
    return [Val(x.shape, np.bool_)]


def _sum(node: Node, opset: int, consts) -> Fn:
    def run(*xs):
        y = np.add(xs[0], xs[1]) if len(xs) > 1 else xs[0].copy()
        for x in xs[2:]:
            y = np.add(y, x)
        return (y,)
    return run


def _prelu(node: Node, opset: int, consts) -> Fn:
    def run(x, slope):
        # y = x where x >= 0, slope * x elsewhere; slope broadcasts to x (unidirectionally)
        return (np.where(x >= 0, x, x * slope).astype(x.dtype, copy=False),)
    return run


def _s_prelu(node, opset, x, slope):
    try:
        fits = _bcast(x.shape, slope.shape) == x.shape
    except ValueError:
        fits = False
    if not fits:
        raise AdtExecutionError(f"{node.label()}: slope {list(slope.shape)} does not broadcast to {list(x.shape)}")
    return [Val(x.shape, x.dtype)]


def _elu(node: Node, opset: int, consts) -> Fn:
    alpha = _float(node, "alpha", 1.0)

    def run(x):
        _need_float(node, x.dtype)
        with np.errstate(over="ignore"):
            return (np.where(x >= 0, x, x.dtype.type(alpha) * np.expm1(np.minimum(x, 0))).astype(x.dtype),)
    return run


def _softplus(node: Node, opset: int, consts) -> Fn:
    def run(x):
        _need_float(node, x.dtype)
        return (np.logaddexp(x.dtype.type(0), x).astype(x.dtype),)
    return run


def _tile(node: Node, opset: int, consts) -> Fn:
    def run(x, repeats):
        reps = _tile_repeats(node, x.ndim, repeats)
        # one broadcast copy into (r0, d0, r1, d1, ...): no intermediate (np.tile repeats axis by axis)
        out = np.empty([v for r, d in zip(reps, x.shape) for v in (r, d)], x.dtype)
        out[...] = x.reshape([v for d in x.shape for v in (1, d)])
        return (out.reshape([r * d for r, d in zip(reps, x.shape)]),)
    return run


def _tile_repeats(node: Node, rank: int, repeats) -> list[int]:
    reps = _as_ints(node, repeats, "repeats")
    if len(reps) != rank or any(r < 0 for r in reps):
        raise AdtExecutionError(f"{node.label()}: repeats {reps} do not fit an input of rank {rank}")
    return reps


def _s_tile(node, opset, x, repeats):
    reps = _tile_repeats(node, x.ndim, _need(node, repeats, "Tile repeats"))
    return [Val([d * r for d, r in zip(x.shape, reps)], x.dtype)]


def _arg(kind: str):
    """ArgMax/ArgMin: int64 indices along ``axis`` (first or, with select_last_index, last extreme)."""
    def factory(node: Node, opset: int, consts) -> Fn:
        keepdims = bool(_int(node, "keepdims", 1))
        last = bool(_int(node, "select_last_index", 0))

        def run(x):
            ax = _arg_axis(node, x.ndim)
            if x.shape[ax] == 0:
                raise AdtExecutionError(f"{node.label()}: {node.op_type} over an empty axis {ax}")
            fn = np.argmax if kind == "max" else np.argmin
            if last:
                y = x.shape[ax] - 1 - fn(np.flip(x, ax), axis=ax)
            else:
                y = fn(x, axis=ax)
            y = y.astype(np.int64)
            return (np.expand_dims(y, ax) if keepdims else y,)
        return run
    return factory


def _arg_axis(node: Node, rank: int) -> int:
    axis = _int(node, "axis", 0)
    if not -rank <= axis < rank:
        raise AdtExecutionError(f"{node.label()}: axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _s_arg(node, opset, x):
    if x.dtype == np.bool_:
        raise AdtExecutionError(f"{node.label()}: {node.op_type} is not defined for bool tensors")
    ax = _arg_axis(node, x.ndim)
    if _int(node, "keepdims", 1):
        out = x.shape[:ax] + (1,) + x.shape[ax + 1:]
    else:
        out = x.shape[:ax] + x.shape[ax + 1:]
    return [Val(out, np.int64)]


# -- Cast ---------------------------------------------------------------------------------------------
def _cast_target(node: Node) -> np.dtype:
    to = _int(node, "to", None)
    if to is None:
        raise AdtArchitectureError(f"{node.label()}: attribute 'to' is required")
    dt = DTYPES.get(to)
    if dt is None:
        name = DTYPE_NAMES.get(to, f"data type {to}")
        raise _unsupported(node, f"Cast to {name}")
    if _int(node, "saturate", 1) != 1:  # opset 19, float8 targets only (refused above)
        raise _unsupported(node, "Cast saturate=0")
    return dt.newbyteorder("=")


def _cast(node: Node, opset: int, consts) -> Fn:
    dt = _cast_target(node)

    def run(x):
        # float -> int truncates toward zero; NaN/out-of-range values are undefined in ONNX
        with np.errstate(invalid="ignore", over="ignore"):
            return (x.astype(dt),)
    return run


def _s_cast(node, opset, x):
    return [Val(x.shape, _cast_target(node))]


def _cast_like(node: Node, opset: int, consts) -> Fn:
    if _int(node, "saturate", 1) != 1:
        raise _unsupported(node, "CastLike saturate=0")

    def run(x, like):
        with np.errstate(invalid="ignore", over="ignore"):
            return (x.astype(like.dtype),)
    return run


def _s_cast_like(node, opset, x, like):
    return [Val(x.shape, like.dtype)]


# -- reductions ---------------------------------------------------------------------------------------
def _axes_from_input(op: str, opset: int) -> bool:
    return opset >= (13 if op == "ReduceSum" else 18)


def _reduce_axes(node: Node, opset: int, rank: int, axes_input) -> list[int] | None:
    """The reduced axes (sorted, non-negative), or None for the identity (``noop_with_empty_axes``)."""
    if _axes_from_input(node.op_type, opset):
        axes = None if axes_input is None else _as_ints(node, axes_input, "axes")
    else:
        if axes_input is not None:
            raise AdtArchitectureError(f"{node.label()}: {node.op_type} takes its axes as an attribute before opset "
                                       f"{13 if node.op_type == 'ReduceSum' else 18}")
        axes = _ints(node, "axes", None)
    if not axes:
        if _int(node, "noop_with_empty_axes", 0):
            return None
        return list(range(rank))
    return sorted(_norm_axes(node, axes, rank))


def _reduce(kind: str):
    def factory(node: Node, opset: int, consts) -> Fn:
        keepdims = bool(_int(node, "keepdims", 1))

        def run(x, axes_in=None):
            axes = _reduce_axes(node, opset, x.ndim, axes_in)
            if axes is None:
                return (x.copy(),)
            if x.dtype == np.bool_:
                raise AdtExecutionError(f"{node.label()}: {node.op_type} is not defined for bool tensors")
            ax = tuple(axes)
            empty = any(x.shape[a] == 0 for a in ax)
            if kind == "sum":
                y = np.sum(x, axis=ax, keepdims=keepdims, dtype=x.dtype)
            elif kind == "prod":
                y = np.prod(x, axis=ax, keepdims=keepdims, dtype=x.dtype)
            elif kind in ("max", "min"):
                fn = np.max if kind == "max" else np.min
                if empty:  # the extreme of nothing: -inf/+inf (the opset-18 definition; the int extremes)
                    if x.dtype.kind == "f":
                        init = -np.inf if kind == "max" else np.inf
                    else:
                        init = np.iinfo(x.dtype).min if kind == "max" else np.iinfo(x.dtype).max
                    y = fn(x, axis=ax, keepdims=keepdims, initial=init)
                else:
                    y = fn(x, axis=ax, keepdims=keepdims)
            else:
                with np.errstate(invalid="ignore", divide="ignore"):
                    if x.dtype.kind == "f":
                        y = np.mean(x, axis=ax, keepdims=keepdims, dtype=x.dtype)
                    else:  # integer mean: float64, truncated back (ONNX's reference)
                        y = np.trunc(np.mean(x, axis=ax, keepdims=keepdims, dtype=np.float64)).astype(x.dtype)
            return (np.asarray(y, dtype=x.dtype),)
        return run
    return factory


def _s_reduce(node, opset, x, axes=None):
    if x.dtype == np.bool_:
        raise AdtExecutionError(f"{node.label()}: {node.op_type} is not defined for bool tensors")
    ax = _reduce_axes(node, opset, x.ndim, None if axes is None else _need(node, axes, f"{node.op_type} axes"))
    if ax is None:
        return [Val(x.shape, x.dtype)]
    if _int(node, "keepdims", 1):
        out = [1 if i in ax else d for i, d in enumerate(x.shape)]
    else:
        out = [d for i, d in enumerate(x.shape) if i not in ax]
    return [Val(out, x.dtype)]


# -- Slice, Split, Expand, ConstantOfShape, Range, Pad ----------------------------------------------
def _slice_plan(node: Node, shape: Sequence[int], starts, ends, axes, steps) -> tuple[tuple, list[int]]:
    """(the index tuple, the output shape) of Slice on ``shape``; shared by the op and its rule."""
    starts, ends = list(starts), list(ends)
    if len(starts) != len(ends):
        raise AdtExecutionError(f"{node.label()}: {len(starts)} starts but {len(ends)} ends")
    rank = len(shape)
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    if len(axes) != len(starts) or len(steps) != len(starts):
        raise AdtExecutionError(f"{node.label()}: starts, ends, axes and steps differ in length "
                                f"({len(starts)}, {len(ends)}, {len(axes)}, {len(steps)})")
    axes = _norm_axes(node, axes, rank)
    index = [slice(None)] * rank
    out = list(shape)
    for a, s, e, st in zip(axes, starts, ends, steps):
        d = shape[a]
        if st == 0:
            raise AdtExecutionError(f"{node.label()}: step 0 on axis {a}")
        s = s + d if s < 0 else s
        e = e + d if e < 0 else e
        if st > 0:
            s, e = min(max(s, 0), d), min(max(e, 0), d)
            n = max(0, -(-(e - s) // st))
        else:
            s, e = min(max(s, 0), d - 1), min(max(e, -1), d - 1)
            n = max(0, -(-(s - e) // -st)) if d else 0
        out[a] = n
        index[a] = slice(s, e, st) if st > 0 or e >= 0 else slice(s, None, st)
    return tuple(index), out


def _slice_args(node: Node, opset: int, ins: list, get) -> tuple:
    """(starts, ends, axes, steps) from the attributes (opset < 10) or the inputs (``get`` reads a value)."""
    if opset < 10:
        starts, ends = _ints(node, "starts", None), _ints(node, "ends", None)
        if starts is None or ends is None:
            raise AdtArchitectureError(f"{node.label()}: attributes 'starts' and 'ends' are required")
        return starts, ends, _ints(node, "axes", None), None
    if len(ins) < 3 or ins[1] is None or ins[2] is None:
        raise AdtArchitectureError(f"{node.label()}: Slice needs the starts and ends inputs from opset 10")
    vals = [None if v is None else _as_ints(node, get(v, what), what)
            for v, what in zip(ins[1:5], ("starts", "ends", "axes", "steps"))]
    vals += [None] * (4 - len(vals))
    return tuple(vals)


def _slice(node: Node, opset: int, consts) -> Fn:
    if opset >= 10 and (len(node.inputs) < 3 or not node.inputs[1] or not node.inputs[2]):
        raise AdtArchitectureError(f"{node.label()}: Slice needs the starts and ends inputs from opset 10")

    def run(x, *rest):
        starts, ends, axes, steps = _slice_args(node, opset, [x, *rest], lambda v, what: v)
        index, _ = _slice_plan(node, x.shape, starts, ends, axes, steps)
        return (x[index].copy(),)
    return run


def _s_slice(node, opset, x, *rest):
    starts, ends, axes, steps = _slice_args(node, opset, [x, *rest], lambda v, what: _need(node, v, f"Slice {what}"))
    _, out = _slice_plan(node, x.shape, starts, ends, axes, steps)
    return [Val(out, x.dtype)]


def _split_sizes(node: Node, opset: int, shape: Sequence[int], split) -> tuple[int, list[int]]:
    axis = _int(node, "axis", 0)
    rank = len(shape)
    if not -rank <= axis < rank:
        raise AdtExecutionError(f"{node.label()}: axis {axis} out of range for rank {rank}")
    ax = axis + rank if axis < 0 else axis
    n = len(node.outputs)
    if split is None and opset < 13:
        split = _ints(node, "split", None)
    d = shape[ax]
    if split is None or len(split) == 0:
        if d % n:
            raise AdtExecutionError(f"{node.label()}: axis {ax} of size {d} does not split into {n} equal parts")
        return ax, [d // n] * n
    split = [int(s) for s in split]
    if len(split) != n or any(s < 0 for s in split) or sum(split) != d:
        raise AdtExecutionError(f"{node.label()}: split {split} does not cut axis {ax} of size {d} into {n} outputs")
    return ax, split


def _split(node: Node, opset: int, consts) -> Fn:
    if _int(node, "num_outputs", None) is not None:
        raise _unsupported(node, "Split's num_outputs attribute (opset 18)")
    if opset < 13 and len(node.inputs) > 1 and node.inputs[1]:
        raise AdtArchitectureError(f"{node.label()}: Split takes 'split' as an attribute before opset 13")

    def run(x, split=None):
        ax, sizes = _split_sizes(node, opset, x.shape, None if split is None else _as_ints(node, split, "split"))
        outs, b0 = [], 0
        for s in sizes:
            outs.append(x[(slice(None),) * ax + (slice(b0, b0 + s),)].copy())
            b0 += s
        return tuple(outs)
    return run


def _s_split(node, opset, x, split=None):
    if _int(node, "num_outputs", None) is not None:
        raise _unsupported(node, "Split's num_outputs attribute (opset 18)")
    sp = None if split is None else _as_ints(node, _need(node, split, "Split sizes"), "split")
    ax, sizes = _split_sizes(node, opset, x.shape, sp)
    return [Val(x.shape[:ax] + (s,) + x.shape[ax + 1:], x.dtype) for s in sizes]


def _target_shape(node: Node, v, what: str) -> list[int]:
    shape = _as_ints(node, v, what)
    if np.asarray(v).ndim != 1:
        raise AdtExecutionError(f"{node.label()}: {what} must be a 1-D tensor, got shape {list(np.shape(v))}")
    return shape


def _expand_shape(node: Node, x_shape, shape) -> tuple[int, ...]:
    if any(d < 0 for d in shape):
        raise AdtExecutionError(f"{node.label()}: negative dimension in the Expand shape {shape}")
    try:
        return _bcast(tuple(x_shape), tuple(shape))
    except ValueError:
        raise AdtExecutionError(f"{node.label()}: input {list(x_shape)} does not broadcast with {shape}") from None


def _expand(node: Node, opset: int, consts) -> Fn:
    def run(x, shape):
        out = _expand_shape(node, x.shape, _target_shape(node, shape, "Expand shape"))
        return (np.array(np.broadcast_to(x, out)),)  # a writable copy, as the budget counts it
    return run


def _s_expand(node, opset, x, shape):
    return [Val(_expand_shape(node, x.shape, _target_shape(node, _need(node, shape, "Expand shape"), "Expand shape")),
                x.dtype)]


def _fill_value(node: Node) -> np.ndarray:
    a = node.attrs.get("value")
    if a is None:
        return np.zeros((), F32)
    if a.type != A_TENSOR:
        raise AdtArchitectureError(f"{node.label()}: attribute 'value' must be a tensor")
    v = a.value.array
    if v.size != 1:
        raise AdtArchitectureError(f"{node.label()}: 'value' must hold one element, it has {v.size}")
    return v.reshape(())


def _constant_of_shape(node: Node, opset: int, consts) -> Fn:
    value = _fill_value(node)

    def run(shape):
        dims = _target_shape(node, shape, "ConstantOfShape shape")
        if any(d < 0 for d in dims):
            raise AdtExecutionError(f"{node.label()}: negative dimension in {dims}")
        return (np.full(dims, value, dtype=value.dtype),)
    return run


def _s_constant_of_shape(node, opset, shape):
    dims = _target_shape(node, _need(node, shape, "ConstantOfShape shape"), "ConstantOfShape shape")
    if any(d < 0 for d in dims):
        raise AdtExecutionError(f"{node.label()}: negative dimension in {dims}")
    return [Val(dims, _fill_value(node).dtype)]


def _range_count(node: Node, start, limit, delta) -> int:
    """max(ceil((limit - start) / delta), 0), ONNX's element count, in exact arithmetic for integers."""
    vals = [np.asarray(v) for v in (start, limit, delta)]
    if any(v.size != 1 for v in vals):
        raise AdtExecutionError(f"{node.label()}: start, limit and delta must be scalars")
    if len({v.dtype for v in vals}) != 1:
        raise AdtExecutionError(f"{node.label()}: start, limit and delta differ in type "
                                f"({', '.join(str(v.dtype) for v in vals)})")
    s, l, d = (v.reshape(()).item() for v in vals)
    if d == 0:
        raise AdtExecutionError(f"{node.label()}: delta is 0")
    if vals[0].dtype.kind in "iu":
        return max(-(-(l - s) // d), 0)
    q = (l - s) / d
    if not math.isfinite(q):
        raise AdtExecutionError(f"{node.label()}: Range({s}, {l}, {d}) has no finite length")
    return max(math.ceil(q), 0)


def _range(node: Node, opset: int, consts) -> Fn:
    def run(start, limit, delta):
        n = _range_count(node, start, limit, delta)
        dt = np.asarray(start).dtype
        s, d = np.asarray(start, dt).reshape(()), np.asarray(delta, dt).reshape(())
        # output[i] = start + i * delta (ONNX's definition), in the inputs' type
        with np.errstate(over="ignore"):
            return ((s + np.arange(n, dtype=dt) * d).astype(dt),)
    return run


def _s_range(node, opset, start, limit, delta):
    vals = [_need(node, v, f"Range {w}") for v, w in zip((start, limit, delta), ("start", "limit", "delta"))]
    return [Val((_range_count(node, *vals),), start.dtype)]


_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _pad_mode(node: Node) -> str:
    mode = _str(node, "mode", "constant")
    if mode not in _PAD_MODES:
        raise _unsupported(node, f"Pad mode {mode!r}")
    return mode


def _pad_widths(node: Node, opset: int, rank: int, pads, axes) -> tuple[list[int], list[int]]:
    """(begin, end) per axis of an input of ``rank`` (negative values crop)."""
    if opset < 11:
        pads = _ints(node, "pads", None)
        if pads is None:
            raise AdtArchitectureError(f"{node.label()}: attribute 'pads' is required")
    elif pads is None:
        raise AdtArchitectureError(f"{node.label()}: Pad needs the pads input from opset 11")
    pads = [int(p) for p in pads]
    ax = list(range(rank)) if axes is None else _norm_axes(node, axes, rank)
    if len(pads) != 2 * len(ax):
        raise AdtExecutionError(f"{node.label()}: {len(pads)} pads for {len(ax)} axes (need {2 * len(ax)})")
    begin, end = [0] * rank, [0] * rank
    for i, a in enumerate(ax):
        begin[a], end[a] = pads[i], pads[len(ax) + i]
    return begin, end


def _pad_shape(node: Node, shape, begin, end) -> list[int]:
    out = [d + b + e for d, b, e in zip(shape, begin, end)]
    if any(o < 0 for o in out):
        raise AdtExecutionError(f"{node.label()}: pads {begin}+{end} crop more than the input {list(shape)}")
    return out


def _pad(node: Node, opset: int, consts) -> Fn:
    mode = _pad_mode(node)
    value_attr = _float(node, "value", 0.0)

    def run(x, pads=None, value=None, axes=None):
        p = None if pads is None else _as_ints(node, pads, "pads")
        a = None if axes is None else _as_ints(node, axes, "axes")
        begin, end = _pad_widths(node, opset, x.ndim, p, a)
        _pad_shape(node, x.shape, begin, end)
        # negative pads crop first
        x = x[tuple(slice(max(-b, 0), d - max(-e, 0)) for d, b, e in zip(x.shape, begin, end))]
        widths = [(max(b, 0), max(e, 0)) for b, e in zip(begin, end)]
        if not any(b or e for b, e in widths):
            return (x.copy(),)
        if mode == "constant":
            v = value_attr if opset < 11 else (0 if value is None or np.size(value) == 0 else
                                                np.asarray(value).reshape(-1)[0])
            y = np.empty([d + b + e for d, (b, e) in zip(x.shape, widths)], dtype=x.dtype)
            y.fill(np.asarray(v).astype(x.dtype))
            y[tuple(slice(b, b + d) for d, (b, _) in zip(x.shape, widths))] = x
            return (y,)
        for d, (b, e) in zip(x.shape, widths):
            if (b or e) and d == 0:
                raise AdtExecutionError(f"{node.label()}: {mode} padding of an empty axis")
            if mode == "reflect" and (b or e) and max(b, e) >= d:
                raise AdtExecutionError(f"{node.label()}: reflect pads {b}+{e} need an axis longer than {max(b, e)}, "
                                        f"it has {d}")
        return (np.pad(x, widths, mode=mode),)
    return run


def _s_pad(node, opset, x, pads=None, value=None, axes=None):
    _pad_mode(node)
    p = None if pads is None else _as_ints(node, _need(node, pads, "Pad pads"), "pads")
    a = None if axes is None else _as_ints(node, _need(node, axes, "Pad axes"), "axes")
    if value is not None and prod(value.shape) > 1:
        raise AdtExecutionError(f"{node.label()}: constant_value must be a scalar, got shape {list(value.shape)}")
    begin, end = _pad_widths(node, opset, x.ndim, p, a)
    return [Val(_pad_shape(node, x.shape, begin, end), x.dtype)]


# -- LayerNormalization -------------------------------------------------------------------------------
def _layer_norm_axis(node: Node, rank: int) -> int:
    axis = _int(node, "axis", -1)
    if not -rank <= axis < rank:
        raise AdtExecutionError(f"{node.label()}: axis {axis} out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _stash_type(node: Node) -> None:
    st = _int(node, "stash_type", 1)
    if st != 1:
        raise _unsupported(node, f"LayerNormalization stash_type={st} (only 1, float32 statistics)")


_LN_BLOCK = 1 << 18  # elements of squares per variance pass


def _layer_norm(node: Node, opset: int, consts) -> Fn:
    eps = _float(node, "epsilon", 1e-5)
    if not eps >= 0:
        raise AdtArchitectureError(f"{node.label()}: epsilon {eps} must be >= 0")
    _stash_type(node)
    n_out = len(node.outputs)  # Mean and InvStdDev are optional outputs

    def run(x, scale, bias=None):
        _need_float(node, x.dtype)
        ax = tuple(range(_layer_norm_axis(node, x.ndim), x.ndim))
        # statistics accumulated in float64 (only the per-row figures are float64), kept as float32
        # (stash_type 1); the output is formed in x's type in one buffer
        mean = np.mean(x, axis=ax, keepdims=True, dtype=np.float64).astype(F32)
        y = np.subtract(x, mean, dtype=x.dtype)
        # the variance row block by row block: the squares never take more than ~1 MiB besides y
        y2 = y.reshape(-1, prod(x.shape[ax[0]:]))
        var = np.empty(y2.shape[0], np.float64)
        step = max(1, _LN_BLOCK // max(1, y2.shape[1]))
        for i in range(0, y2.shape[0], step):
            var[i:i + step] = np.mean(np.square(y2[i:i + step]), axis=1, dtype=np.float64)
        inv = (1.0 / np.sqrt(var + eps)).astype(F32).reshape(mean.shape)
        y *= inv
        y *= scale
        if bias is not None:
            y += bias
        return (y, mean, inv)[:n_out]
    return run


def _s_layer_norm(node, opset, x, scale, bias=None):
    _need_float(node, x.dtype)
    _stash_type(node)
    axis = _layer_norm_axis(node, x.ndim)
    for v, what in ((scale, "Scale"), (bias, "B")):
        try:
            fits = v is None or _bcast(x.shape, v.shape) == x.shape
        except ValueError:
            fits = False
        if not fits:
            raise AdtExecutionError(f"{node.label()}: {what} {list(v.shape)} does not broadcast to {list(x.shape)}")
    stats = x.shape[:axis] + (1,) * (x.ndim - axis)
    return [Val(x.shape, x.dtype), Val(stats, F32), Val(stats, F32)][:len(node.outputs)]


# -- LSTM and GRU -------------------------------------------------------------------------------------
def _sigmoid(x):
    with np.errstate(over="ignore"):  # e^-x = inf for x < -88 (float32): 1 / inf = 0, the right limit
        y = np.exp(-x)
    y += 1
    return np.reciprocal(y, out=y)


_RNN_ACTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "sigmoid": _sigmoid, "tanh": np.tanh, "relu": lambda x: np.maximum(x, x.dtype.type(0)),
    "softsign": lambda x: x / (1 + np.abs(x)), "softplus": lambda x: np.logaddexp(0, x).astype(x.dtype),
}
_RNN_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


@dataclass(frozen=True)
class _Rnn:
    """The resolved attributes of an LSTM/GRU node."""
    directions: tuple[str, ...]
    hidden: int | None
    layout: int
    clip: float | None
    acts: tuple[tuple[Callable, ...], ...]  # per direction: (f, g[, h])
    extra: int  # LSTM: input_forget; GRU: linear_before_reset


def _rnn_attrs(node: Node, n_acts: int, defaults: tuple[str, ...]) -> _Rnn:
    direction = _str(node, "direction", "forward")
    if direction not in _RNN_DIRECTIONS:
        raise AdtArchitectureError(f"{node.label()}: direction {direction!r} is not forward, reverse or bidirectional")
    dirs = ("forward", "reverse") if direction == "bidirectional" else (direction,)
    layout = _int(node, "layout", 0)
    if layout not in (0, 1):
        raise AdtArchitectureError(f"{node.label()}: layout must be 0 or 1, got {layout}")
    hidden = _int(node, "hidden_size", None)
    if hidden is not None and hidden < 1:
        raise AdtArchitectureError(f"{node.label()}: hidden_size must be >= 1, got {hidden}")
    clip = _float(node, "clip", None)
    if clip is not None and not clip > 0:
        raise AdtArchitectureError(f"{node.label()}: clip must be > 0, got {clip}")
    if node.attrs.get("activation_alpha") is not None or node.attrs.get("activation_beta") is not None:
        raise _unsupported(node, f"{node.op_type} activation_alpha/activation_beta (parametrized activations)")
    names = node.attrs.get("activations")
    names = [v.decode("utf-8", "replace") for v in names.value] if names is not None else list(defaults) * len(dirs)
    if len(names) != n_acts * len(dirs):
        raise AdtArchitectureError(f"{node.label()}: {len(names)} activations, expected {n_acts * len(dirs)}")
    acts = []
    for name in names:
        fn = _RNN_ACTS.get(name.lower())
        if fn is None:
            raise _unsupported(node, f"{node.op_type} activation {name!r}")
        acts.append(fn)
    extra = _int(node, "input_forget" if node.op_type == "LSTM" else "linear_before_reset", 0)
    return _Rnn(dirs, hidden, layout, clip, tuple(tuple(acts[i:i + n_acts]) for i in range(0, len(acts), n_acts)),
                extra)


def _rnn_shapes(node: Node, a: _Rnn, gates: int, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
    """(seq, batch, input, hidden) after checking every input's shape against them."""
    if x.ndim != 3:
        raise AdtExecutionError(f"{node.label()}: X must be 3-D, got {list(x.shape)}")
    seq, batch, inp = (x.shape[1], x.shape[0], x.shape[2]) if a.layout else x.shape
    nd = len(a.directions)
    hidden = a.hidden if a.hidden is not None else (r.shape[-1] if r.ndim == 3 else -1)
    want = {"W": (w, (nd, gates * hidden, inp)), "R": (r, (nd, gates * hidden, hidden)),
            "B": (b, (nd, 2 * gates * hidden)), "sequence_lens": (seq_lens, (batch,)),
            "P": (p, (nd, 3 * hidden))}
    state = (batch, nd, hidden) if a.layout else (nd, batch, hidden)
    want.update({"initial_h": (h0, state), "initial_c": (c0, state)})
    for what, (v, shape) in want.items():
        if v is not None and tuple(v.shape) != shape:
            raise AdtExecutionError(f"{node.label()}: {what} has shape {list(v.shape)}, expected {list(shape)}")
    if seq_lens is not None and seq_lens.dtype.kind not in "iu":
        raise AdtExecutionError(f"{node.label()}: sequence_lens must be integers, got {seq_lens.dtype}")
    return seq, batch, inp, hidden


def _rnn_outputs(node: Node, a: _Rnn, seq, batch, hidden, dtype, n_state: int) -> list:
    nd = len(a.directions)
    y = (batch, seq, nd, hidden) if a.layout else (seq, nd, batch, hidden)
    state = (batch, nd, hidden) if a.layout else (nd, batch, hidden)
    return [Val(y, dtype)] + [Val(state, dtype)] * n_state


def _rmul(r: np.ndarray, h: np.ndarray) -> np.ndarray:
    """``h @ r.T`` for the few rows of a recurrent state, computed as ``(r @ h.T).T`` so that BLAS reads
    the (gates*hidden, hidden) weight in its stored order: measured 2x faster with one thread, and
    20x when OpenBLAS threads compete for busy cores (the transposed-operand path)."""
    return (r @ h.T).T


def _rnn(node: Node, opset: int, consts, lstm: bool) -> Fn:
    gates = 4 if lstm else 3
    a = _rnn_attrs(node, 3 if lstm else 2, ("Sigmoid", "Tanh", "Tanh") if lstm else ("Sigmoid", "Tanh"))
    n_out = len(node.outputs)

    def run(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        if not lstm and (c0 is not None or p is not None):
            raise AdtExecutionError(f"{node.label()}: GRU takes 6 inputs at most")
        _need_float(node, x.dtype)
        seq, batch, _, hidden = _rnn_shapes(node, a, gates, x, w, r, b, seq_lens, h0, c0, p)
        dt = x.dtype
        if a.layout:  # batch-major in and out
            x = x.transpose(1, 0, 2)
            h0 = None if h0 is None else h0.transpose(1, 0, 2)
            c0 = None if c0 is None else c0.transpose(1, 0, 2)
        lens = np.full(batch, seq) if seq_lens is None else np.asarray(seq_lens).astype(np.int64)
        if lens.size and (lens.min() < 0 or lens.max() > seq):
            raise AdtExecutionError(f"{node.label()}: sequence_lens {lens.tolist()} out of range [0, {seq}]")
        masked = bool(lens.size) and int(lens.min()) < seq  # some sequence ends early: per-row masks
        nd = len(a.directions)
        y = np.zeros((seq, nd, batch, hidden), dt)
        yh = np.zeros((nd, batch, hidden), dt)
        yc = np.zeros((nd, batch, hidden), dt)
        for d, direction in enumerate(a.directions):
            acts = a.acts[d]
            wd, rd = w[d], r[d]
            bias = np.zeros(2 * gates * hidden, dt) if b is None else b[d]
            # the input projection of every step at once: one matmul
            xw = (x.reshape(seq * batch, -1) @ wd.T).reshape(seq, batch, gates * hidden) + bias[:gates * hidden]
            rb = bias[gates * hidden:]
            h = np.zeros((batch, hidden), dt) if h0 is None else h0[d].astype(dt)
            c = np.zeros((batch, hidden), dt) if c0 is None else c0[d].astype(dt)
            steps = range(seq) if direction == "forward" else range(seq - 1, -1, -1)
            for t in steps:
                valid = (t < lens)[:, None] if masked else None
                if lstm:
                    g = xw[t] + _rmul(rd, h) + rb
                    if a.clip is not None:
                        g = np.clip(g, -a.clip, a.clip)
                    gi, go, gf, gc = (g[:, k * hidden:(k + 1) * hidden] for k in range(4))  # iofc
                    if p is not None:
                        pi, po, pf = (p[d][k * hidden:(k + 1) * hidden] for k in range(3))  # iof
                        gi, gf = gi + pi * c, gf + pf * c
                    i = acts[0](gi)
                    f = 1 - i if a.extra else acts[0](gf)
                    c_new = f * c + i * acts[1](gc)
                    if p is not None:
                        go = go + po * c_new
                    h_new = acts[0](go) * acts[2](c_new)
                    c = c_new if valid is None else np.where(valid, c_new, c)
                else:
                    # the h-gate's recurrent product only when linear_before_reset (else it reads r*h)
                    hz = _rmul(rd if a.extra else rd[:2 * hidden], h)
                    xz, xr, xh = (xw[t][:, k * hidden:(k + 1) * hidden] for k in range(3))  # zrh
                    rz, rr, rh = (hz[:, k * hidden:(k + 1) * hidden] for k in range(3))
                    bz, br, bh = (rb[k * hidden:(k + 1) * hidden] for k in range(3))
                    gz, gr = xz + rz + bz, xr + rr + br
                    if a.clip is not None:
                        gz, gr = np.clip(gz, -a.clip, a.clip), np.clip(gr, -a.clip, a.clip)
                    z, rg = acts[0](gz), acts[0](gr)
                    if a.extra:  # linear_before_reset
                        gh = xh + rg * (rh + bh)
                    else:
                        gh = xh + _rmul(rd[2 * hidden:], rg * h) + bh
                    if a.clip is not None:
                        gh = np.clip(gh, -a.clip, a.clip)
                    h_new = (1 - z) * acts[1](gh) + z * h
                if valid is None:
                    h = h_new.astype(dt, copy=False)
                    y[t, d] = h
                else:
                    h = np.where(valid, h_new, h).astype(dt, copy=False)
                    y[t, d] = np.where(valid, h, 0)
            yh[d], yc[d] = h, c
        if a.layout:
            outs = (y.transpose(2, 0, 1, 3).copy(), yh.transpose(1, 0, 2).copy(), yc.transpose(1, 0, 2).copy())
        else:
            outs = (y, yh, yc)
        return outs[:n_out]
    return run


def _s_rnn(lstm: bool):
    def rule(node, opset, x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None):
        if not lstm and (c0 is not None or p is not None):
            raise AdtExecutionError(f"{node.label()}: GRU takes 6 inputs at most")
        _need_float(node, x.dtype)
        a = _rnn_attrs(node, 3 if lstm else 2, ("Sigmoid", "Tanh", "Tanh") if lstm else ("Sigmoid", "Tanh"))
        seq, batch, _, hidden = _rnn_shapes(node, a, 4 if lstm else 3, x, w, r, b, seq_lens, h0, c0, p)
        return _rnn_outputs(node, a, seq, batch, hidden, x.dtype, 2 if lstm else 1)[:len(node.outputs)]
    return rule


# -- the tables ---------------------------------------------------------------------------------------
NEW_OPS.update({
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _hard_swish,
    "Erf": _erf,
    "Sqrt": _float_unary(np.sqrt),
    "Exp": _float_unary(np.exp),
    "Log": _float_unary(np.log),
    "Neg": _numeric_unary(np.negative),
    "Abs": _numeric_unary(np.abs),
    "Pow": _pow,
    "Mod": _mod,
    "Equal": _compare(np.equal),
    "Where": _where,
    "Min": _variadic(np.minimum),
    "Max": _variadic(np.maximum),
    "Cast": _cast,
    "CastLike": _cast_like,
    "ReduceMean": _reduce("mean"),
    "ReduceSum": _reduce("sum"),
    "ReduceMax": _reduce("max"),
    "ReduceMin": _reduce("min"),
    "ReduceProd": _reduce("prod"),
    "ArgMax": _arg("max"),
    "ArgMin": _arg("min"),
    "Not": _not,
    "And": _logical(np.logical_and),
    "Or": _logical(np.logical_or),
    "Xor": _logical(np.logical_xor),
    "Less": _compare(np.less),
    "LessOrEqual": _compare(np.less_equal),
    "Greater": _compare(np.greater),
    "GreaterOrEqual": _compare(np.greater_equal),
    "Sum": _sum,
    "Reciprocal": _float_unary(np.reciprocal),
    "Floor": _float_unary(np.floor),
    "Ceil": _float_unary(np.ceil),
    "Sin": _float_unary(np.sin),
    "Cos": _float_unary(np.cos),
    "PRelu": _prelu,
    "Elu": _elu,
    "Softplus": _softplus,
    "Tile": _tile,
    "Slice": _slice,
    "Split": _split,
    "Expand": _expand,
    "ConstantOfShape": _constant_of_shape,
    "Range": _range,
    "Pad": _pad,
    "LayerNormalization": _layer_norm,
    "LSTM": lambda n, o, c: _rnn(n, o, c, lstm=True),
    "GRU": lambda n, o, c: _rnn(n, o, c, lstm=False),
})

#: op -> (required inputs, most inputs (None: variadic), outputs the op can produce); see numpy_engine.ARITY
NEW_ARITY.update({
    "HardSigmoid": (1, 1, 1), "HardSwish": (1, 1, 1), "Erf": (1, 1, 1), "Sqrt": (1, 1, 1), "Exp": (1, 1, 1),
    "Log": (1, 1, 1), "Neg": (1, 1, 1), "Abs": (1, 1, 1), "Pow": (2, 2, 1), "Mod": (2, 2, 1), "Equal": (2, 2, 1),
    "Where": (3, 3, 1), "Min": (1, None, 1), "Max": (1, None, 1), "Cast": (1, 1, 1), "CastLike": (2, 2, 1),
    "ReduceMean": (1, 2, 1), "ReduceSum": (1, 2, 1), "ReduceMax": (1, 2, 1), "ReduceMin": (1, 2, 1),
    "ReduceProd": (1, 2, 1), "ArgMax": (1, 1, 1), "ArgMin": (1, 1, 1), "Not": (1, 1, 1), "And": (2, 2, 1),
    "Or": (2, 2, 1), "Xor": (2, 2, 1), "Less": (2, 2, 1), "LessOrEqual": (2, 2, 1), "Greater": (2, 2, 1),
    "GreaterOrEqual": (2, 2, 1), "Sum": (1, None, 1), "Reciprocal": (1, 1, 1), "Floor": (1, 1, 1),
    "Ceil": (1, 1, 1), "Sin": (1, 1, 1), "Cos": (1, 1, 1), "PRelu": (2, 2, 1), "Elu": (1, 1, 1),
    "Softplus": (1, 1, 1), "Tile": (2, 2, 1), "Slice": (1, 5, 1),
    "Split": (1, 2, _MANY), "Expand": (2, 2, 1), "ConstantOfShape": (1, 1, 1), "Range": (3, 3, 1),
    "Pad": (1, 4, 1), "LayerNormalization": (2, 3, 3), "LSTM": (3, 8, 3), "GRU": (3, 6, 2),
})

NEW_SHAPES.update({
    "HardSigmoid": _s_float_same, "HardSwish": _s_float_same, "Erf": _s_numeric_same, "Sqrt": _s_float_same,
    "Exp": _s_float_same, "Log": _s_float_same, "Neg": _s_numeric_same, "Abs": _s_numeric_same, "Pow": _s_pow,
    "Mod": _s_binary, "Equal": _s_compare, "Where": _s_where, "Min": _s_variadic, "Max": _s_variadic,
    "Cast": _s_cast, "CastLike": _s_cast_like, "ReduceMean": _s_reduce, "ReduceSum": _s_reduce,
    "ReduceMax": _s_reduce, "ReduceMin": _s_reduce, "ReduceProd": _s_reduce, "ArgMax": _s_arg, "ArgMin": _s_arg,
    "Not": _s_not, "And": _s_logical, "Or": _s_logical, "Xor": _s_logical, "Less": _s_compare,
    "LessOrEqual": _s_compare, "Greater": _s_compare, "GreaterOrEqual": _s_compare, "Sum": _s_variadic,
    "Reciprocal": _s_float_same, "Floor": _s_float_same, "Ceil": _s_float_same, "Sin": _s_float_same,
    "Cos": _s_float_same, "PRelu": _s_prelu, "Elu": _s_float_same, "Softplus": _s_float_same, "Tile": _s_tile,
    "Slice": _s_slice, "Split": _s_split, "Expand": _s_expand,
    "ConstantOfShape": _s_constant_of_shape, "Range": _s_range, "Pad": _s_pad, "LayerNormalization": _s_layer_norm,
    "LSTM": _s_rnn(lstm=True), "GRU": _s_rnn(lstm=False),
})

# registration: the engine's registries now hold these ops too
_engine.OPS.update(NEW_OPS)
_engine.ARITY.update(NEW_ARITY)
_engine.SHAPES.update(NEW_SHAPES)
