"""Re-encode .adt files written by the draft writer (commit 710a65b: code tables stored every symbol
of the span) into the final v1.0 layout (code tables store only the used symbols, FORMAT.md).

The decoded symbols, quantizers, names, metadata and architecture are carried over unchanged, so a
model's weights and outputs are bit-identical before and after; only the code-table bytes (and the
payload, if the table policy choice flips) change. Used once for results/adt/*.adt, which were
trained and exported while the format branch was still landing.

    python benchmarks/migrate_draft_tables.py FILE.adt [...]     # rewrites in place (atomically)
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import types
from pathlib import Path

import numpy as np

from adt.runtime.format import CORE_CP, ENC_PLAIN, AdtWriter, read_adt, write_atomic

DRAFT_COMMIT = "710a65b"
REPO = Path(__file__).resolve().parent.parent


def _draft_reader():
    """Import the draft reader from git history as package ``adt_draft_format``."""
    tmp = Path(tempfile.mkdtemp()) / "adt_draft_format"
    tmp.mkdir()
    for name in ("__init__", "binary", "container", "errors", "huffman", "limits", "quantize", "reader", "writer"):
        src = subprocess.run(["git", "-C", str(REPO), "show", f"{DRAFT_COMMIT}:runtime/format/{name}.py"],
                             check=True, capture_output=True, text=True).stdout
        (tmp / f"{name}.py").write_text(src)
    sys.path.insert(0, str(tmp.parent))
    import adt_draft_format.reader as r  # noqa: E402
    return r.read_adt


def migrate(path: Path, draft_read) -> tuple[int, int]:
    data = path.read_bytes()
    try:
        read_adt(data)
        return len(data), len(data)  # already final
    except Exception:
        pass
    f = draft_read(data)
    w = AdtWriter(tables="auto")
    for k, v in f.metadata.items():
        w.add_metadata(k, v)
    if f.architecture is not None:
        w.set_architecture(f.architecture)
    for g in f.groups:
        w.add_group(g.q, g.b)
    for c in f.cores:
        if c.kind == CORE_CP:
            w.add_core(c.symbols, c.group, cp_order=c.order)
        else:
            w.add_core(c.symbols, c.group)
    for p in f.params:
        if p.encoding == ENC_PLAIN:
            w.add_plain(p.name, p.symbols, p.group)
        else:
            w.add_tucker(p.name, p.shape, p.core, p.factors, p.group)
    out = w.to_bytes()
    g = read_adt(out)  # check: same symbols everywhere
    for a, b in zip(f.cores, g.cores):
        assert np.array_equal(a.symbols, b.symbols)
    for a, b in zip(f.params, g.params):
        assert a.name == b.name
        if a.encoding == ENC_PLAIN:
            assert np.array_equal(a.symbols, b.symbols)
        else:
            assert all(np.array_equal(x, y) for x, y in zip(a.factors, b.factors))
    write_atomic(path, out)
    return len(data), len(out)


if __name__ == "__main__":
    reader = _draft_reader()
    for arg in sys.argv[1:]:
        before, after = migrate(Path(arg), reader)
        print(f"{arg}: {before} -> {after} bytes")
