"""Compressing to a file-size budget (issue 20 item 4): sizes, planning, fitting, real file bytes."""
import os
import re

import numpy as np
import pytest
import torch

from adt.exporter import apply_ada_tucker, build_model, export_adt, preset, qat_finetune, train, TrainConfig
from adt.exporter.export import encode_adt, prepare_export
from adt.exporter.planner import count_stored, model_params
from adt.exporter.size_budget import (
    MIN_Q, SizeBudgetError, fit_to_size, format_size, parse_size, plan_for_size, smallest_plan,
)
from adt.runtime.format import AdtError, read_adt
from adt.runtime.format.limits import MAX_Q
from adt.runtime.preprocess import INPUT_KEY, LABELS_KEY, InputConvention

LENET = (1, 28, 28)
RESNET = (3, 32, 32)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Small models on a shared 2-core machine: one thread runs them faster than contended ones (the
    CLI's --threads default is 1 for the same reason)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def random_loader(shape, n=128, batch=32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen)
    y = torch.randint(0, 10, (n,), generator=gen)
    return [(x[i:i + batch], y[i:i + batch]) for i in range(0, n, batch)]


def lenet_ada():
    """LeNet-5 with the paper's 2,594-value ADA plan, scratch init (no training needed for Q fits)."""
    torch.manual_seed(0)
    m = build_model("lenet5")
    apply_ada_tucker(m, preset("lenet5-ada"), seed=0)
    return m.eval()


# --------------------------------------------------------------------------------------------------
# Sizes
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    ("50000", 50000), ("50000B", 50000), ("50KB", 50 * 1000), ("50kB", 50 * 1000), ("50 kb", 50 * 1000),
    ("48KiB", 48 * 1024), ("1.5MiB", 3 * 1024 ** 2 // 2), ("2MB", 2 * 1000 ** 2), ("1GB", 1000 ** 3),
    ("1GiB", 1024 ** 3), ("1_000", 1000), ("0.5KB", 500), ("1.0005KB", 1000), (777, 777),
])
def test_parse_size_reads_si_and_iec_units(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text, says", [
    ("50K", "KiB for 1,024"), ("2M", "KiB for 1,024"), ("abc", "not a byte count"), ("", "not a byte count"),
    ("-5KB", "not a byte count"), ("5 XB", "not a byte count"), ("1e3", "not a byte count"),
    ("0", "at least 1 byte"), ("0.0001KB", "at least 1 byte"), ("50KB!", "not a byte count"),
])
def test_parse_size_refuses_bad_text_with_a_typed_error(text, says):
    with pytest.raises(SizeBudgetError) as err:
        parse_size(text)
    assert isinstance(err.value, AdtError)
    assert says in str(err.value) and repr(text) in str(err.value)


def test_format_size_gives_exact_bytes():
    assert format_size(50000) == "50,000 bytes (50.0 KB)"
    assert format_size(999) == "999 bytes"


# --------------------------------------------------------------------------------------------------
# The encoder the searches use: the written file's bytes, without the check or a file
# --------------------------------------------------------------------------------------------------
def test_encode_adt_has_the_length_of_the_written_file(tmp_path):
    m = lenet_ada()
    gen = np.random.default_rng(0)
    test = (gen.standard_normal((40, *LENET)).astype(np.float32), gen.integers(0, 10, 40))
    kw = dict(input_shape=LENET, q={"cores": 200, "factors": 100, "other": 60}, test_data=test, selfcheck=True,
              metadata={"train": "epochs=1"}, model_name="lenet5", input_convention=InputConvention.mnist(),
              labels=[f"digit {i}" for i in range(10)])
    data = encode_adt(m, **kw)
    rep = export_adt(m, tmp_path / "m.adt", **kw)
    assert len(data) == rep.file_bytes == os.path.getsize(tmp_path / "m.adt")
    # the accuracy entries exist in both (placeholders in the encoding, same length)
    assert {"acc_float", "acc_quant", "selfcheck", INPUT_KEY, LABELS_KEY} <= set(read_adt(data).metadata)
    # a preparation of another plan of the same network serves as well as a fresh trace
    other = build_model("lenet5")
    apply_ada_tucker(other, preset("lenet5-paper"), seed=1)
    like = prepare_export(other, input_shape=LENET, compact_names=True)
    for compact in (True, False):
        fresh = encode_adt(m, input_shape=LENET, compact_names=compact, q=64)
        reused = encode_adt(m, input_shape=LENET, compact_names=compact, q=64,
                            prepared=prepare_export(m, input_shape=LENET, compact_names=compact, like=like))
        assert fresh == reused


# --------------------------------------------------------------------------------------------------
# Planning, training, fitting: the written file lands in [0.97, 1.00] x budget
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, shape, budget, q, steps", [
    ("lenet5", LENET, parse_size("20KB"), 512, 2),
    ("lenet5", LENET, parse_size("50KB"), {"cores": 256, "factors": 256, "other": 64}, 2),
    ("resnet20", RESNET, parse_size("40KB"), 256, 0),  # its initial values (training it here is slow)
])
def test_planned_model_lands_in_the_window_by_real_file_bytes(tmp_path, name, shape, budget, q, steps):
    torch.manual_seed(0)
    model = build_model(name)
    export = dict(input_shape=shape, q=q, model_name=name, metadata={"train": "a few random steps"})
    plan, est = plan_for_size(model, budget, **export)
    assert est.estimated_bytes <= budget and est.ratio == est.estimated_bytes / budget
    assert est.stored_values == model_params(model, plan) < count_stored(model)
    apply_ada_tucker(model, plan, seed=0)
    if steps:
        train(model, random_loader(shape, n=16 * steps, batch=16), TrainConfig(epochs=1, lr=1e-3), progress=False)

    fit = fit_to_size(model, budget, **export)
    out = tmp_path / f"{name}.adt"
    export_adt(model, out, fit.options)
    size = os.path.getsize(out)
    assert size == fit.file_bytes
    assert 0.97 * budget <= size <= budget, fit.summary()
    assert fit.in_window
    # the fit's Q, given back as --q would be, makes the same file
    assert len(encode_adt(model, input_shape=shape, q=fit.q, model_name=name, metadata=export["metadata"])) == size


def test_fit_raises_q_under_the_window_and_lowers_it_over_it(tmp_path):
    m = lenet_ada()
    base = len(encode_adt(m, input_shape=LENET, q=128, compact_names=True))
    for budget, up in ((int(base * 1.15), True), (int(base * 0.9), False)):
        fit = fit_to_size(m, budget, input_shape=LENET, q=128, compact_names=True, path=tmp_path / "m.adt")
        size = os.path.getsize(tmp_path / "m.adt")
        assert size == fit.file_bytes == fit.report.file_bytes
        assert 0.97 * budget <= size <= budget, fit.summary()
        assert (fit.q > 128) if up else (fit.q < 128)
        assert all(g.q == fit.q for g in fit.plan.groups)
    # inside already: nothing changes
    same = fit_to_size(m, int(base / 0.985), input_shape=LENET, q=128, compact_names=True)
    assert same.scale == 1.0 and same.q == 128 and same.file_bytes == base


def test_fit_keeps_a_qat_plan_b_and_rescales_its_q():
    m = lenet_ada()
    qat = qat_finetune(m, random_loader(LENET, n=64), epochs=1, max_steps=2, lr=1e-3, progress=False, q=256)
    base = len(encode_adt(m, input_shape=LENET, plan=qat.plan))
    fit = fit_to_size(m, int(base * 0.9), input_shape=LENET, plan=qat.plan)
    assert fit.in_window and fit.q is None
    assert [g.b for g in fit.plan.groups] == [g.b for g in qat.plan.groups]
    assert all(g.q < 256 for g in fit.plan.groups)
    assert len(encode_adt(m, fit.options)) == fit.file_bytes


def test_fit_refuses_a_budget_below_the_file_at_the_fewest_levels():
    m = lenet_ada()
    smallest = len(encode_adt(m, input_shape=LENET, q=MIN_Q))
    with pytest.raises(SizeBudgetError) as err:
        fit_to_size(m, smallest - 1, input_shape=LENET, q=512)
    msg = str(err.value)
    assert f"{smallest:,} bytes" in msg and "architecture" in msg and f"min Q {MIN_Q}" in msg


def test_fit_says_when_even_the_most_levels_stay_under_the_window():
    m = lenet_ada()
    most = len(encode_adt(m, input_shape=LENET, q=MAX_Q))
    fit = fit_to_size(m, int(most / 0.9), input_shape=LENET, q=512)
    assert not fit.in_window and fit.scale == 1.0 and fit.q == 512
    assert "under the window" in fit.note and f"{most:,} bytes" in fit.note
    assert fit.file_bytes == len(encode_adt(m, input_shape=LENET, q=512))


# --------------------------------------------------------------------------------------------------
# Planning limits
# --------------------------------------------------------------------------------------------------
def test_a_budget_below_the_smallest_plan_names_the_fixed_costs():
    model = build_model("lenet5")
    with pytest.raises(SizeBudgetError) as err:
        plan_for_size(model, "500B", input_shape=LENET)
    msg = str(err.value)
    assert "500 bytes" in msg and "fixed costs" in msg
    assert re.search(r"architecture [\d,]+", msg) and re.search(r"metadata [\d,]+", msg)
    smallest = int(re.search(r"makes a ([\d,]+) bytes", msg).group(1).replace(",", ""))
    assert smallest > 500
    # the smallest plan itself: rank-1 cores, every planned layer smaller than dense
    small = smallest_plan(model)
    assert small and all(set(lp.core) == {1} and lp.params < lp.numel for lp in small.values())


def test_scada_plan_for_size_shares_one_core_and_fits():
    model = build_model("lenet5")
    plan, est = plan_for_size(model, "8KB", input_shape=LENET, scada=True, q=256)
    assert est.estimated_bytes <= 8000
    d = max(lp.order for lp in plan.values())
    tops = {lp.core for lp in plan.values() if lp.order == d}
    assert len(tops) == 1
    assert all(lp.core == next(iter(tops))[: lp.order] for lp in plan.values())


def test_plan_for_size_refuses_a_resolved_quant_plan_and_bad_proxy():
    model = build_model("lenet5")
    with pytest.raises(AdtError, match="proxy"):
        plan_for_size(model, 20000, input_shape=LENET, proxy="laplace")
    m = lenet_ada()
    from adt.exporter import make_quant_plan
    with pytest.raises(AdtError, match="QuantPlan"):
        plan_for_size(model, 20000, input_shape=LENET, plan=make_quant_plan(m))
