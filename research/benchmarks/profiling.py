"""Where a benchmark's time goes: one cProfile helper shared by the benchmark scripts."""
from __future__ import annotations

import cProfile
import pstats
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

__all__ = ["ProfileRow", "own_time_profile"]


@dataclass(frozen=True)
class ProfileRow:
    """One function of a profile: ``file:line(name)``, calls, own and cumulative seconds (all runs)."""

    function: str
    calls: int
    own_s: float
    cumulative_s: float


def own_time_profile(fn: Callable[[], object], runs: int = 1, top: int = 12) -> list[ProfileRow]:
    """cProfile of ``runs`` calls of ``fn``: the ``top`` functions with the most own time, most first.
    Divide the seconds by ``runs`` for per-call figures."""
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(runs):
        fn()
    prof.disable()
    rows = sorted(pstats.Stats(prof).stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return [ProfileRow(f"{Path(f).name}:{line}({name})", nc, tt, ct) for (f, line, name), (_, nc, tt, ct, _) in rows]
