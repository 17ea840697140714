"""Importing the user's own Python, shared by ``--model`` (:mod:`.user_model`) and ``--data``
(:mod:`.datasets`): a file imported by path under a unique module name, a folder on ``sys.path`` for
the duration, and an exception's first line for a one-line error."""
from __future__ import annotations

import importlib.util
import itertools
import sys
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import Iterator

__all__ = ["first_line", "on_sys_path", "import_file"]

_counter = itertools.count()


def first_line(exc: BaseException) -> str:
    """``"TypeError: the first line of the message"`` (the type alone when there is no message)."""
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {line}" if line else type(exc).__name__


@contextmanager
def on_sys_path(folder: str, last: bool = False) -> Iterator[None]:
    """``folder`` on ``sys.path`` (first, or ``last``) for the duration, unless it is there already."""
    if folder in sys.path:
        yield
        return
    if last:
        sys.path.append(folder)
    else:
        sys.path.insert(0, folder)
    try:
        yield
    finally:
        # remove the entry we added (the imported code may have changed sys.path meanwhile)
        hits = [i for i, p in enumerate(sys.path) if p == folder]
        if hits:
            del sys.path[hits[-1] if last else hits[0]]


def import_file(path: Path, tag: str) -> ModuleType:
    """Import the existing file ``path`` as a fresh module ``adt_user_TAG_N_STEM`` (two files called
    ``model.py`` never clash; registered in ``sys.modules`` because dataclasses, pickling and typing
    look classes up by module name). Raises ImportError when Python cannot load it as a module; an
    exception of the file's own code propagates, with the half-made module removed."""
    unique = f"adt_user_{tag}_{next(_counter)}_{''.join(c if c.isalnum() else '_' for c in path.stem)}"
    spec = importlib.util.spec_from_file_location(unique, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {str(path)!r} as a Python file")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[unique] = mod
    try:
        spec.loader.exec_module(mod)
    except BaseException:
        del sys.modules[unique]
        raise
    return mod
