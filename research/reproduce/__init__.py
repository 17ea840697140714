"""The paper reproduction: ADA-Tucker (arXiv 1906.07671) Table 1 on MNIST, scored from real ``.adt`` files.

    python -m research.reproduce mnist --data DIR [--rows ...] [--stage train|export|report|all|rescore]

Modules: :mod:`~research.reproduce.cli` (the stages; ``python -m research.reproduce``),
:mod:`~research.reproduce.presets` (runs, export variants, the paper's numbers),
:mod:`~research.reproduce.train`, :mod:`~research.reproduce.export` (files are scored by
``adt.tools.scoring.score_file``), :mod:`~research.reproduce.report`, and the one-off studies :mod:`~research.reproduce.recipe`,
:mod:`~research.reproduce.rounding`, :mod:`~research.reproduce.qsweep`, :mod:`~research.reproduce.probe`,
:mod:`~research.reproduce.paramcount`, :mod:`~research.reproduce.aug`.

Nothing is imported here, so ``--help`` and the torch-free modules load without torch.
"""
