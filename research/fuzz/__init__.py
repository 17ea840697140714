"""Fuzzing of ADT's runtime. :mod:`research.fuzz.adt_fuzz` is a structure-aware fuzzer: it mutates the
fields and sections of seed ``.adt`` files (container and ONNX architecture), re-encodes them
consistently (lengths, DEFLATE, payload, CRC-32) and runs read + load + run on both engines, each
case in a child process under RLIMIT_AS = 1 GiB and a 10 s limit, classifying the outcomes. See
``research/fuzz/README.md``. The hostile-but-valid corpus lives in ``tests/runtime/hostile/``."""
