"""Fuzzing of the ``.adt`` reader: scripts that feed ``adt.runtime.format.read_adt`` mutated or random
files and check that every failure is an ``AdtError`` naming its field. Empty for now: the committed
malformed-file corpus is decoded by the format tests (tests/format)."""
