"""The ``adt`` commands, one module each: ``demo``, ``compress``, ``run``, ``inspect``, ``verify``,
``bench``, ``to_onnx`` (the ``to-onnx`` command).

A command module defines

* ``add_arguments(parser: argparse.ArgumentParser) -> None``: its options; an option with a fixed
  set of values takes ``choices=`` from the module that owns them (never a copy of the list);
* ``run(args: argparse.Namespace) -> int``: the work; it raises :class:`adt.tools.errors.CommandError`
  (or any :class:`~adt.runtime.format.AdtError`) for a user error, which the CLI prints as one line.

A command module never imports :mod:`adt.tools.cli`. Commands that need torch (``demo``, ``compress``)
import it at module level so that the CLI can name the missing extra; the others stay torch-free.
To add a command: a module here, plus one line in :data:`adt.tools.cli.COMMANDS`.
"""
