"""Benchmarks of the format and the runtime; each module is a script that writes one ``results/`` record.

    python -m research.benchmarks.huffman_bench          # results/huffman_bench.json
    python -m research.benchmarks.table_policy_lenet5    # results/table_policy_lenet5.json
    python -m research.benchmarks.arch_dict_bench        # results/arch_dict.json
    python -m research.benchmarks.bench_lenet            # results/bench_lenet.json
    python -m research.benchmarks.wrn_scale              # results/wrn_scale.json + .md
    python -m research.benchmarks.crosscheck_torch_runtime --data DIR   # results/crosscheck_torch_runtime.json

Nothing is imported here: ``bench_lenet`` and ``wrn_scale`` set the BLAS thread variables before
NumPy is first imported.
"""
