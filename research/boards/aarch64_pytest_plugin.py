"""pytest plugin loaded only by research/boards/aarch64_check.sh for the test run under qemu-aarch64
(``-p research.boards.aarch64_pytest_plugin``; research code, never part of the wheel).

Emulation makes every test 5-500x slower, so Hypothesis' per-example deadline (200 ms) would turn
slow-but-correct tests into failures; the profile below drops the deadline and, unless
ADT_ARM64_MAX_EXAMPLES says otherwise, runs fewer examples per property to keep the run small.
Tests that set their own ``@settings(max_examples=...)`` keep it.
"""
from __future__ import annotations

import os

__all__ = ["pytest_configure"]


def pytest_configure(config) -> None:  # noqa: ARG001 - pytest hook signature
    try:
        from hypothesis import HealthCheck, settings
    except ImportError:  # hypothesis absent: nothing to relax
        return
    settings.register_profile(
        "arm64-emulated",
        deadline=None,
        max_examples=int(os.environ.get("ADT_ARM64_MAX_EXAMPLES", "20")),
        suppress_health_check=[HealthCheck.too_slow],
    )
    settings.load_profile("arm64-emulated")
