#!/usr/bin/env bash
# aarch64_check.sh - the arm64 (aarch64) board check: board_check.sh --arch arm64 --suite bookworm.
#
# Usage: bash research/boards/aarch64_check.sh --file results/adt/lenet5-ada-s0-paper.adt [options]
# Every option of board_check.sh applies (--help lists them); results go to results/arm64.json + .md.
# ADT_ARM64_CACHE, if set, is the environment folder (as before board_check.sh existed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
extra=()
[[ -n "${ADT_ARM64_CACHE:-}" ]] && extra=(--cache "$ADT_ARM64_CACHE")
exec bash "$here/board_check.sh" --arch arm64 --suite bookworm "${extra[@]}" "$@"
