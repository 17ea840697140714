"""The rebuild's memory budget (issue 17): from the validated tensor table alone, before anything is
rebuilt, the peak of the whole rebuild is computed and checked against ``max_memory``; a few bytes
that would cost gigabytes raise AdtBudgetError at once, naming the parameter, the figure and the
limit. Real models, up to a ResNet-18-sized file, pass the default comfortably."""
from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import adt.runtime as rt
from adt.runtime import rebuild as rebuild_mod
from adt.runtime.errors import AdtBudgetError
from adt.runtime.format import AdtTableError, AdtWriter, read_adt
from adt.runtime.rebuild import DEFAULT_MAX_MEMORY, check_rebuild_budget, rebuild_plan, rebuild_weights
from adt.runtime.samples import resnet18_shapes

from runtime_models import lenet5, make_adt, mlp, rebuild_with_traced_peak, refused_before_allocating, resblock

REPO = Path(__file__).resolve().parents[2]
RNG = np.random.default_rng(17)


def amplifier(n: int, order: int = 8) -> bytes:
    """The issue's crafted file: an order-``order`` Tucker core of size 1 with ``n x 1`` factors, a
    parameter of n**order elements from a file of a few dozen bytes."""
    w = AdtWriter()
    g = w.add_group(2, 1.0)
    c = w.add_core(np.ones((1,) * order, np.uint16), g)
    w.add_tucker("amp", (n,) * order, c, [np.ones((n, 1), np.uint16)] * order, g)
    return w.to_bytes()


def build(specs: dict, seed: int = 0) -> bytes:
    """Weights only: {name: ("tucker", shape, reshape, ranks) | ("cp", shape, reshape, rank) |
    ("plain", shape) | ("shared", shape, reshape, ranks)} with random symbols (Q=256)."""
    rng = np.random.default_rng(seed)
    w = AdtWriter()
    g = w.add_group(256, 1.0)
    cores, shared = {}, None
    for name, spec in specs.items():
        if spec[0] == "tucker":
            cores[name] = w.add_core(rng.integers(0, 256, spec[3]), g)
        elif spec[0] == "cp":
            cores[name] = w.add_core(rng.integers(0, 256, spec[3]), g, cp_order=len(spec[2]))
        elif spec[0] == "shared":
            if shared is None:
                shared = w.add_core(rng.integers(0, 256, spec[3]), g)
            cores[name] = shared
    for name, spec in specs.items():
        if spec[0] == "plain":
            w.add_plain(name, rng.integers(0, 256, spec[1]), g)
            continue
        ranks = spec[3] if spec[0] != "cp" else (spec[3],) * len(spec[2])
        w.add_tucker(name, spec[1], cores[name], [rng.integers(0, 256, (n, k)) for n, k in zip(spec[2], ranks)], g)
    return w.to_bytes()


def resnet18_specs() -> dict:
    """ResNet-18's parameters with BatchNorm running statistics (11.69M + 9.6K values): convolutions
    and the classifier Tucker-coded with small cores, every vector stored plain."""
    specs: dict = {}
    for name, shape in resnet18_shapes(running_stats=True):
        if len(shape) == 4:
            cout, cin, k, _ = shape
            specs[name] = ("tucker", shape, shape, (min(cout, 16), min(cin, 16), k, k))
        elif len(shape) == 2:
            specs[name] = ("tucker", shape, shape, (8, 8))
        else:
            specs[name] = ("plain", shape)
    return specs


# -- the crafted amplifier --------------------------------------------------------------------------
def test_crafted_tucker_amplifier_is_refused_at_once():
    data = amplifier(10)                      # 10**8 elements: 400 MB of float32 + chunked float64 temporaries
    assert len(data) < 100
    seconds, peak = refused_before_allocating(data, r"parameter 'amp'.*549\.33 MiB.*max_memory=256\.00 MiB",
                                              AdtBudgetError)
    assert seconds < 2.0
    assert peak < 4 << 20                     # nothing of the parameter's size was allocated
    with pytest.raises(AdtBudgetError, match="'amp'"):
        rebuild_weights(data)                 # the public rebuild has the same default


def test_max_memory_is_the_callers_to_raise():
    data = amplifier(6)                       # 6**8 = 1.68M elements: 6.7 MB of float32 + chunked temporaries
    need = check_rebuild_budget(read_adt(data), None).peak
    assert 8 << 20 < need < 16 << 20
    with pytest.raises(AdtBudgetError, match=r"'amp'.*max_memory=8\.00 MiB"):
        rt.load(data, max_memory=8 << 20)
    m = rt.load(data, max_memory=need)
    assert m.weights["amp"].shape == (6,) * 8 and float(m.weights["amp"].max()) == float(m.weights["amp"].min())
    assert rt.load(data, max_memory=None).weights["amp"].shape == (6,) * 8


def test_budget_counts_weights_already_rebuilt():
    # each parameter alone fits in 6 MiB, all of them together do not
    specs = {f"p{i}": ("plain", (256, 256)) for i in range(6)}   # 256 KiB each, 1.25 MiB while rebuilt
    data = build(specs)
    plan = rebuild_plan(read_adt(data))
    assert plan.kept == 6 * 256 * 256 * 4
    assert all(c.peak <= 6 << 20 for c in plan.params)
    with pytest.raises(AdtBudgetError, match=r"parameter 'p\d'.*already rebuilt"):
        rt.load(data, max_memory=2 << 20)
    rt.load(data, max_memory=plan.peak)


@pytest.mark.parametrize("bad", [0, -1, "2GB", 1.5, True])
def test_max_memory_must_be_a_positive_byte_count(bad):
    with pytest.raises(ValueError, match="max_memory"):
        rt.load(amplifier(2), max_memory=bad)


# -- the estimate against what the rebuild really allocates -----------------------------------------
CASES = {
    "tucker-conv": {"w": ("tucker", (256, 256, 3, 3), (256, 256, 9), (16, 16, 5))},
    "tucker-full-rank": {"w": ("tucker", (64, 64, 64), (64, 64, 64), (64, 64, 64))},
    "tucker-order8": {"w": ("tucker", (8 ** 8,), (8,) * 8, (1,) * 8)},
    "cp": {"w": ("cp", (300, 784), (15, 20, 28, 28), 20)},
    "cp-rank-over-dims": {"w": ("cp", (100, 100), (100, 100), 500)},
    "cp-order8": {"w": ("cp", (6 ** 8,), (6,) * 8, 3)},
    "plain": {"w": ("plain", (1000, 1000))},
    "mixed-shared": {"a": ("plain", (1000, 100)), "b": ("shared", (128, 128, 3, 3), (128, 128, 9), (16, 16, 9)),
                     "c": ("shared", (128, 128, 3, 3), (128, 128, 9), (16, 16, 9)),
                     "d": ("tucker", (512, 512, 3, 3), (512, 512, 9), (32, 32, 9))},
}


@pytest.mark.parametrize("case", list(CASES))
def test_estimate_bounds_the_traced_peak(case):
    plan, weights, peak = rebuild_with_traced_peak(read_adt(build(CASES[case])))
    assert plan.kept == sum(w.nbytes for w in weights.values())
    assert plan.peak >= peak, (plan.peak, peak)                  # an upper bound, Python objects included
    assert plan.peak <= 2.5 * peak + (1 << 20), (plan.peak, peak)  # and not a wild one


def test_estimate_of_the_runtime_test_models_bounds_the_traced_peak():
    for builder in (lenet5, mlp, resblock):
        f = read_adt(make_adt(*builder()))
        plan = rebuild_plan(f)
        tracemalloc.start()
        rebuild_weights(f)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert plan.peak >= peak, (builder, plan.peak, peak)


# -- real models pass the default comfortably -------------------------------------------------------
def test_committed_models_are_far_below_the_default():
    paths = sorted((REPO / "results").rglob("*.adt")) + sorted((REPO / "format_spec" / "vectors").glob("*.adt"))
    assert paths
    for path in paths:
        assert check_rebuild_budget(read_adt(path)).peak < DEFAULT_MAX_MEMORY // 16, path


def test_resnet18_sized_file_loads_under_the_default():
    data = build(resnet18_specs())
    f = read_adt(data)
    plan = check_rebuild_budget(f)
    assert 11_600_000 * 4 < plan.kept < 11_800_000 * 4           # 47 MB of float32 weights
    assert plan.peak < DEFAULT_MAX_MEMORY // 2, plan.peak        # comfortably: under half the default
    m = rt.load(f, engine=None)
    assert sum(w.size for w in m.weights.values()) == plan.kept // 4


def test_an_array_over_the_platforms_largest_is_refused_before_the_rebuild(monkeypatch):
    """On a 32-bit build (sys.maxsize = 2 GiB - 1) a 2**28-element weight cannot exist, whatever
    max_memory: AdtBudgetError names it before anything is allocated (not NumPy's ValueError)."""
    data = build(CASES["tucker-conv"])                  # a 256x256x3x3 weight: 2.25 MiB as float32
    monkeypatch.setattr(rebuild_mod, "MAX_ARRAY_BYTES", (1 << 21) - 1)
    with pytest.raises(AdtBudgetError, match=r"parameter 'w': .* more than the largest array this platform can "
                                             r"hold \(2\.00 MiB .*sys\.maxsize, a 32-bit build\)"):
        rt.load(data, max_memory=None)
    monkeypatch.setattr(rebuild_mod, "MAX_ARRAY_BYTES", 1 << 40)
    assert rt.load(data, max_memory=None, engine=None).weights["w"].shape == (256, 256, 3, 3)


# -- failures during the rebuild are typed and name the parameter ----------------------------------
def test_memory_error_during_rebuild_is_a_budget_error(monkeypatch):
    def oom(core, factors, out, schedule=None):
        raise MemoryError()
    monkeypatch.setattr(rebuild_mod, "tucker_into", oom)
    with pytest.raises(AdtBudgetError, match=r"parameter 'w': out of memory while rebuilding it"):
        rt.load(build(CASES["tucker-conv"]), engine=None)


def test_unexpected_error_during_rebuild_is_a_table_error(monkeypatch):
    def broken(core, factors):
        raise ValueError("cannot reshape")
    monkeypatch.setattr(rebuild_mod, "cp_to_tensor", broken)
    with pytest.raises(AdtTableError, match=r"parameter 'w': cannot rebuild it: cannot reshape"):
        rebuild_weights(build(CASES["cp"]))
