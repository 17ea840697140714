"""adt inspect: the byte accounting adds up to the file size exactly, the paper's ratios follow
Eq. 11-14, names from the file are escaped, and the CLI's --json / --plot work."""
from __future__ import annotations

import json
import subprocess
import sys
import unicodedata

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from adt.runtime.format import AdtWriter, read_adt
from adt.tools.inspect_report import build_report, entropy_bits, render_text, safe_text

from cli_helpers import CLI
from tools_adt_files import mixed_file, sym


def check_accounting(data: bytes) -> dict:
    """Independent re-count of the report's numbers against the raw file."""
    f = read_adt(data)
    r = build_report(data)
    assert sum(row["bytes"] for row in r["sections"]) == len(data)
    assert r["totals"]["file_bytes"] == len(data)
    payload = next(row for row in r["sections"] if row["name"] == "payload")
    assert sum(p["bits"] for p in r["payload"]) == 8 * payload["bytes"]
    assert 0 <= r["payload"][-1]["bits"] < 8  # padding
    # Every coded value's bits, recomputed from the code tables, match the per-array bits.
    for core, row in zip(f.cores, r["cores"]):
        assert row["bits"] == f.tables[f.groups[core.group].table].bit_count(core.symbols.reshape(-1))
    users = {}
    for p in f.params:
        if p.factors:
            users.setdefault(p.core, []).append(p.name)
    for p, row in zip(f.params, r["layers"]):
        code = f.tables[f.groups[p.group].table]
        arrays = [p.symbols] if p.factors == [] else list(p.factors)
        if p.factors and len(users[p.core]) == 1:  # an own core counts with its parameter
            arrays.append(f.cores[p.core].symbols)
        assert row["bits"] == sum(code.bit_count(a.reshape(-1)) for a in arrays)
        assert row["stored_values"] == sum(a.size for a in arrays)
    shared = sum(c["bits"] for c in r["cores"] if len(c["users"]) > 1)
    assert sum(row["bits"] for row in r["layers"]) + shared == f.payload_bits
    assert r["totals"]["original_float32_bytes"] == 4 * sum(int(np.prod(p.shape)) for p in f.params)
    assert abs(r["totals"]["true_ratio"] - r["totals"]["original_float32_bytes"] / len(data)) < 1e-12
    json.loads(json.dumps(r))  # JSON-serializable
    return r


def test_mixed_file_accounting_and_methods():
    data = mixed_file(arch=b"\x08\x07" * 300)
    r = check_accounting(data)
    methods = {row["name"]: row["method"] for row in r["layers"]}
    assert methods == {"conv1.weight": "ADA", "fc1.weight": "SCADA shared core", "fc2.weight": "SCADA shared core",
                       "fc3.weight": "CP", "conv1.bias": "plain", "bn.running_var": "plain"}
    names = [row["name"] for row in r["sections"]]
    assert names == ["header (magic, version)", "section table", "metadata", "architecture", "code tables",
                     "tensor table", "payload", "checksum (CRC-32)"]
    arch = next(row["bytes"] for row in r["sections"] if row["name"] == "architecture")
    meta = next(row["bytes"] for row in r["sections"] if row["name"] == "metadata")
    assert r["totals"]["weights_only_bytes"] == len(data) - arch - meta
    assert r["file"]["architecture_bytes"] == 600
    assert r["paper"]["equation"].startswith("Eq. 11/12")


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), n_plain=st.integers(0, 3), n_tucker=st.integers(0, 3),
       shared=st.booleans(), with_meta=st.booleans(), tables=st.sampled_from(["shared", "per_group", "auto"]))
def test_accounting_adds_up_on_random_files(seed, n_plain, n_tucker, shared, with_meta, tables):
    if n_plain + n_tucker == 0:
        n_plain = 1
    rng = np.random.default_rng(seed)
    w = AdtWriter(tables=tables)
    if with_meta:
        w.add_metadata("k", "v" * int(rng.integers(0, 300)))
    q = int(rng.integers(2, 2000))
    g = w.add_group(q, 3.0)
    cores = []  # (index, dims)
    if n_tucker:
        for _ in range(1 if shared else n_tucker):
            dims = tuple(int(k) for k in rng.integers(1, 5, size=2))
            cores.append((w.add_core(sym(rng, dims, q), g), dims))
    for i in range(n_tucker):
        c, (k1, k2) = cores[0 if shared else i]
        n1, n2 = (int(n) for n in rng.integers(1, 30, size=2))
        w.add_tucker(f"t{i}.weight", (n1, n2), c, [sym(rng, (n1, k1), q), sym(rng, (n2, k2), q)], g)
    for i in range(n_plain):
        w.add_plain(f"p{i}.bias", sym(rng, (int(rng.integers(1, 50)),), q), g)
    r = check_accounting(w.to_bytes())
    if n_tucker > 1 and shared:
        assert r["paper"]["equation"] == "Eq. 12 (SCADA-Tucker)"


def test_paper_ratios_follow_eq_11_and_14():
    """A two-layer ADA file whose Eq. 11 ratio is known by hand."""
    rng = np.random.default_rng(1)
    w = AdtWriter()
    g = w.add_group(512, 3.0)
    c1 = w.add_core(sym(rng, (3, 3, 3)), g)
    c2 = w.add_core(sym(rng, (2, 2)), g)
    w.add_tucker("a", (10, 10, 10), c1, [sym(rng, (10, 3))] * 3, g)   # 1000 weights, 27 + 90 stored
    w.add_tucker("b", (20, 30), c2, [sym(rng, (20, 2)), sym(rng, (30, 2))], g)  # 600 weights, 4 + 100
    w.add_plain("b.bias", sym(rng, 20), g)                              # 20 weights, 20 stored
    data = w.to_bytes()
    r = check_accounting(data)
    p = r["paper"]
    assert p["equation"] == "Eq. 11 (ADA-Tucker)"
    assert p["raw_ratio_decomposed_only"] == pytest.approx(1600 / (27 + 90 + 4 + 100))
    assert p["raw_ratio"] == pytest.approx(1620 / (27 + 90 + 4 + 100 + 20))
    a_bar = read_adt(data).payload_bits / 241
    assert p["avg_code_bits"] == pytest.approx(a_bar)
    assert p["qh_ratio"] == pytest.approx(32 * (1620 / 241) / a_bar)


def test_entropy_bits():
    assert entropy_bits(np.array([3, 3, 3, 3], np.uint16)) == 0.0
    assert entropy_bits(np.array([0, 1, 2, 3], np.uint16)) == pytest.approx(2.0)
    assert entropy_bits(np.array([0, 0, 0, 1], np.uint16)) == pytest.approx(0.8112781244591328)
    assert entropy_bits(np.zeros(0, np.uint16)) == 0.0


def test_payload_near_entropy_and_per_table_bound():
    r = check_accounting(mixed_file(tables="shared"))
    # Huffman is within 1 bit/value of the entropy and never below it.
    t = r["totals"]
    assert t["entropy_bound_bits"] <= t["payload_bits"] <= t["entropy_bound_bits"] + t["stored_values"]


EVIL = {"producer": "x\x1b[2J\x1b]0;pwned\x07", "model": "a\nb\rc\u202eevil\u200b", "long": "z" * 5000}


def _no_control(text: str) -> None:
    bad = [c for c in text if c != "\n" and unicodedata.category(c)[0] == "C"]
    assert not bad, bad


def test_render_escapes_file_strings():
    rng = np.random.default_rng(0)
    w = AdtWriter()
    for k, v in EVIL.items():
        w.add_metadata(k, v)
    g = w.add_group(16, 1.0)
    w.add_plain("w\x1b[31m\u202e\n", sym(rng, 8, 16, 1.0), g)
    text = render_text(build_report(w.to_bytes()))
    _no_control(text)
    assert "\\x1b[2J" in text and "\\u202e" in text and "\\x0a" in text
    assert max(len(line) for line in text.splitlines()) < 400  # the 5000-char value is cut
    assert safe_text("a\\b") == "a\\\\b"


def test_cli_text_json_and_plot(tmp_path):
    path = tmp_path / "m.adt"
    path.write_bytes(mixed_file(metadata=EVIL))
    out = subprocess.run(CLI + ["inspect", str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    _no_control(out.stdout)
    assert "TRUE ratio" in out.stdout and "Paper's formula ratios" in out.stdout
    out = subprocess.run(CLI + ["inspect", str(path), "--json", "--plot", str(tmp_path / "p.png")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    _no_control(out.stdout)
    r = json.loads(out.stdout)
    assert r["file"]["metadata"]["producer"] == EVIL["producer"]
    assert sum(row["bytes"] for row in r["sections"]) == path.stat().st_size
    png = (tmp_path / "p.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_cli_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.adt"
    data = bytearray(mixed_file())
    data[len(data) // 2] ^= 0x40
    bad.write_bytes(bytes(data))
    for args in (["inspect", str(bad)], ["inspect", str(tmp_path / "missing.adt")]):
        out = subprocess.run(CLI + args, capture_output=True, text=True)
        assert out.returncode == 1
        assert out.stdout == ""
        assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
        assert out.stderr.startswith("adt inspect: error:")


def test_plot_without_matplotlib_names_the_extra(tmp_path):
    path = tmp_path / "m.adt"
    path.write_bytes(mixed_file())
    # Block matplotlib in the child: a meta-path finder that refuses it.
    code = ("import sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name.split('.')[0] == 'matplotlib': raise ImportError('blocked')\n"
            "sys.meta_path.insert(0, Block())\n"
            "from adt.tools.cli import main\n"
            f"sys.exit(main(['inspect', {str(path)!r}, '--plot', {str(tmp_path / 'p.png')!r}]))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1
    assert len(out.stderr.strip().splitlines()) == 1 and "adt[plot]" in out.stderr
    assert not (tmp_path / "p.png").exists()
