"""Checks of the torch-free runtime on other CPU architectures, run under qemu-user emulation.

aarch64: ``bash research/boards/aarch64_check.sh --file M.adt --data DIR`` (driver), with
:mod:`research.boards.aarch64_e2e` (decode, classify, compare; ``results/arm64.json`` + ``.md``) and
:mod:`research.boards.aarch64_pytest_plugin` (Hypothesis settings for the emulated test run).
An armv7l check goes beside them as ``armv7l_*``.
"""
