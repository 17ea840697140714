"""Checks of the torch-free runtime on ARM boards' Debian, run under qemu-user emulation.

``bash research/boards/board_check.sh --arch arm64|armhf --suite bookworm|trixie --file M.adt`` (driver;
``aarch64_check.sh`` is its arm64 shorthand), with :mod:`research.boards.aarch64_e2e` (decode, classify,
compare; ``results/arm64.json``, ``results/armv7l-<suite>.json`` + ``.md``),
:mod:`research.boards.aarch64_pytest_plugin` (Hypothesis settings for the emulated test run) and
:mod:`research.boards.report` (``results/boards.md`` + ``.json``: every results file's targets).
See research/boards/README.md.
"""
