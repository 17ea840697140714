"""The user's own model: resolve a ``--model`` spec to an ``nn.Module``, and load a dense checkpoint into it.

    from adt.exporter import resolve_model, load_checkpoint
    um = resolve_model("mynet.py:MyNet", "num_classes=10,width=0.5")   # or "lenet5", "pkg.mod:make_net",
    load_checkpoint(um.module, "dense.pt")                              #    "pkg.mod.MyNet", "model.pt2"

Spec forms (:func:`resolve_model`):

- a built-in name (:data:`adt.exporter.models.MODELS`: ``lenet5``, ``resnet20``, ...);
- ``path/to/file.py:NAME``: the file is imported by path under a unique module name, with its folder on
  ``sys.path`` while it is imported and NAME is called (so its sibling imports work); ``file.py`` alone
  when the file defines exactly one ``nn.Module`` class;
- ``package.module:NAME`` (importlib), or ``package.module.NAME`` (the last dot splits module and NAME);
  the current directory is searched after ``sys.path`` (``--model mynet:MyNet`` beside ``mynet.py``);
- a whole saved model: a ``torch.export`` ExportedProgram file (``torch.export.save``; dynamic batch
  dimension recommended) or a TorchScript file (``torch.jit.save``; converted to an ExportedProgram by
  torch's ``TS2EPConverter``, which needs one sample's ``input_shape``).

NAME is an ``nn.Module`` subclass, a factory returning one, or a module instance; ``model_args``
(:func:`parse_model_args`) are its keyword arguments.

Why saved models are *lifted* (:func:`lift_graph_module`): ADT compresses ``nn.Linear`` / ``nn.ConvNd``
modules and stores BatchNorm as ``nn.BatchNorm*`` modules, but an ExportedProgram's graph calls aten
functions on bare parameters. The lift replaces each ``aten.conv*`` / ``aten.convolution`` /
``aten.linear`` / ``addmm``-with-transposed-weight, ``aten.batch_norm`` and ``aten.dropout`` call whose
tensors are the module's own attributes and whose other arguments are constants by a call of a real
``nn`` module holding those same tensors, at the module path the weights already had (``layer1.0.conv1``),
so state_dict keys stay those of the original model. BatchNorm and Dropout become modules too because
their train/eval behaviour is baked into the traced call and must follow ``model.train()`` again.
Everything else in the graph is left as it is.

Checkpoints (:func:`load_checkpoint`) load with ``torch.load(weights_only=True)``: a file that needs
more (pickled classes, i.e. code) is refused, never executed. A saved *model* is different: it is code
like a ``.py`` file (its graph calls whatever torch functions it names, and ``torch.export.load`` itself
may unpickle parts of the archive), so give only files you trust, as you would a ``.py`` file.
"""
from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import itertools
import operator
import os
import pickle
import re
import warnings
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import torch
from torch import nn

from .errors import CheckpointError, ModelError
from .models import MODELS
from .user_code import first_line as _first_line
from .user_code import import_file
from .user_code import on_sys_path as _on_sys_path

__all__ = [
    "SOURCES", "UserModel", "CheckpointLoad", "resolve_model", "parse_model_args", "lift_exported_program",
    "lift_graph_module", "load_checkpoint",
]

#: ``UserModel.source`` values: where the module came from.
SOURCES = ("builtin", "file", "module", "exported-program", "torchscript")

_BOOL_WORDS = {"true": True, "false": False, "none": None}
_MAX_LISTED = 5


@dataclass
class UserModel:
    """A resolved ``--model``: the module (train mode, CPU), a display ``name``, one sample's
    ``input_shape`` when it is known (built-ins, a saved model's example input, a module's own
    ``input_shape`` attribute; else None: the data decides), where it came from (``source``, one of
    :data:`SOURCES`), the ``spec`` as given, the keyword arguments it was built with, and the built-in
    dataset (``"mnist"`` or None)."""

    module: nn.Module
    name: str
    input_shape: tuple[int, ...] | None
    source: str
    spec: str
    model_args: dict[str, Any] = field(default_factory=dict)
    dataset: str | None = None


# --------------------------------------------------------------------------------------------------
# --model-args
# --------------------------------------------------------------------------------------------------
def _literal(node: ast.expr, text: str) -> Any:
    # true/false/none as written on a command line, at any depth (lists, tuples, dicts)
    class Words(ast.NodeTransformer):
        def visit_Name(self, n: ast.Name) -> ast.AST:
            if n.id.lower() in _BOOL_WORDS:
                return ast.copy_location(ast.Constant(_BOOL_WORDS[n.id.lower()]), n)
            raise ModelError(f"--model-args {text!r}: {n.id!r} is not a value; quote strings (name='{n.id}'), "
                             "numbers, true/false/none, lists or tuples are accepted")

    node = Words().visit(node)
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, RecursionError):
        raise ModelError(f"--model-args {text!r}: {ast.unparse(node)!r} is not a literal value (numbers, "
                         "quoted strings, true/false/none, lists, tuples, dicts)") from None


def parse_model_args(text: str | Mapping[str, Any] | None) -> dict[str, Any]:
    """Keyword arguments from ``"num_classes=10,width=0.5,name='x',flag=true"``: each value a Python
    literal (``ast.literal_eval``; ``true``/``false``/``none`` in any case too), commas inside brackets or
    quotes allowed. A mapping is returned as a dict; None or ``""`` gives ``{}``. Raises
    :class:`ModelError` naming the text and what is wrong (not ``key=value``, a positional value, a
    repeated key, a value that is not a literal)."""
    if text is None:
        return {}
    if isinstance(text, Mapping):
        bad = [k for k in text if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ModelError(f"model args: key {bad[0]!r} is not a Python identifier")
        return dict(text)
    text = " ".join(text.splitlines())  # one line: the end-of-call check below counts columns
    if not text.strip():
        return {}
    try:
        call = ast.parse(f"f({text})", mode="eval").body
    except SyntaxError as exc:
        raise ModelError(f"--model-args {text!r} is not a comma-separated list of key=value "
                         f"({exc.msg})") from None
    if not isinstance(call, ast.Call) or call.func.end_col_offset != 1 or call.end_col_offset != len(text) + 3:
        raise ModelError(f"--model-args {text!r} is not a comma-separated list of key=value")
    if call.args:
        raise ModelError(f"--model-args {text!r}: {ast.unparse(call.args[0])!r} has no name; write key=value")
    out: dict[str, Any] = {}
    for kw in call.keywords:
        if kw.arg is None:
            raise ModelError(f"--model-args {text!r}: '**' is not accepted; write key=value")
        if kw.arg in out:
            raise ModelError(f"--model-args {text!r}: {kw.arg!r} is given twice")
        out[kw.arg] = _literal(kw.value, text)
    return out


# --------------------------------------------------------------------------------------------------
# Spec resolution
# --------------------------------------------------------------------------------------------------
def _candidates(mod: Any) -> list[str]:
    """Public names of ``mod`` that could be a model: nn.Module classes and module instances, and
    functions, defined in ``mod`` or a submodule of it."""
    own = getattr(mod, "__name__", "")
    funcs, classes = [], []  # factories first: torchvision-style modules list many building-block classes
    for key, obj in vars(mod).items():
        if key.startswith("_"):
            continue
        if isinstance(obj, nn.Module) or (inspect.isclass(obj) and issubclass(obj, nn.Module)
                                          and obj.__module__.startswith(own)):
            classes.append(key)
        elif inspect.isfunction(obj) and obj.__module__.startswith(own):
            funcs.append(key)
    return sorted(funcs) + sorted(classes)


def _missing_name(spec: str, where: str, name: str, mod: Any) -> ModelError:
    cands = _candidates(mod)
    close = difflib.get_close_matches(name, cands, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = ", ".join(cands[:20]) + (f" and {len(cands) - 20} more" if len(cands) > 20 else "")
    return ModelError(f"--model {spec!r}: {where} has no {name!r}{hint}; its nn.Module classes and callables: "
                      f"{listed or 'none'}")


def _signature(obj: Any, name: str) -> str:
    try:
        return f"{name}{inspect.signature(obj)}"
    except (TypeError, ValueError):
        return f"{name}(...)"


def _build(spec: str, obj: Any, name: str, kwargs: dict[str, Any]) -> nn.Module:
    """Instantiate NAME: an nn.Module instance as is (no args), a class or factory called with ``kwargs``."""
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ModelError(f"--model {spec!r}: {name} is a module instance, not a class or factory; it takes "
                             f"no --model-args (got {', '.join(kwargs)})")
        return obj
    if not callable(obj):
        raise ModelError(f"--model {spec!r}: {name} is a {type(obj).__name__}, not an nn.Module class or a "
                         "factory returning one")
    try:
        inspect.signature(obj).bind(**kwargs)
    except TypeError as exc:
        raise ModelError(f"--model {spec!r}: {name} does not take these arguments ({exc}); its signature: "
                         f"{_signature(obj, name)}") from None
    except ValueError:  # no signature to check (a builtin): let the call say
        pass
    try:
        module = obj(**kwargs)
    except Exception as exc:  # noqa: BLE001 - the user's constructor: any failure is one line
        args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
        raise ModelError(f"--model {spec!r}: {name}({args}) failed: {_first_line(exc)}; its signature: "
                         f"{_signature(obj, name)}") from None
    if not isinstance(module, nn.Module):
        raise ModelError(f"--model {spec!r}: {name}(...) returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def _import_file(spec: str, path: Path) -> Any:
    if not path.is_file():
        raise ModelError(f"--model {spec!r}: file {str(path)!r} does not exist")
    try:
        return import_file(path, "model")
    except Exception as exc:  # noqa: BLE001 - the user's file: any failure is one line
        raise ModelError(f"--model {spec!r}: importing {str(path)!r} failed: {_first_line(exc)}") from None


def _import_module(spec: str, modname: str) -> Any:
    try:
        return importlib.import_module(modname)
    except ModuleNotFoundError as exc:
        if exc.name is not None and modname.startswith(exc.name) and (modname == exc.name or modname[len(exc.name)] == "."):
            raise ModelError(f"--model {spec!r}: no module named {exc.name!r} (not a built-in model "
                             f"({', '.join(MODELS)}), and not importable from sys.path)") from None
        raise ModelError(f"--model {spec!r}: importing {modname!r} failed: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - the user's module: any failure is one line
        raise ModelError(f"--model {spec!r}: importing {modname!r} failed: {_first_line(exc)}") from None


def _module_shape(module: nn.Module) -> tuple[int, ...] | None:
    shape = getattr(module, "input_shape", None)
    try:
        return tuple(int(d) for d in shape) if shape is not None else None
    except (TypeError, ValueError):
        return None


def _from_file(spec: str, file: str, name: str | None, kwargs: dict[str, Any]) -> UserModel:
    path = Path(file).expanduser()
    folder = str(path.resolve().parent)
    with _on_sys_path(folder):
        mod = _import_file(spec, path)
        if name is None:
            classes = [k for k, v in vars(mod).items() if inspect.isclass(v) and issubclass(v, nn.Module)
                       and v.__module__ == mod.__name__ and not k.startswith("_")]
            if len(classes) != 1:
                raise ModelError(f"--model {spec!r}: name the model as {file}:NAME; {str(path)!r} defines "
                                 f"{len(classes)} nn.Module classes ({', '.join(classes) or 'none'})")
            name = classes[0]
        if not hasattr(mod, name):
            raise _missing_name(spec, repr(str(path)), name, mod)
        module = _build(spec, getattr(mod, name), name, kwargs)
    return UserModel(module, name, _module_shape(module), "file", spec, kwargs)


def _from_module(spec: str, modname: str, name: str, kwargs: dict[str, Any]) -> UserModel:
    # the current directory is searched last, as `python -m` would search it first: the `adt` console
    # script's sys.path lacks it, and `--model mynet:MyNet` next to mynet.py must work
    with _on_sys_path(os.getcwd(), last=True):
        return _from_module_on_path(spec, modname, name, kwargs)


def _from_module_on_path(spec: str, modname: str, name: str, kwargs: dict[str, Any]) -> UserModel:
    mod = _import_module(spec, modname)
    obj = getattr(mod, name, None)
    if obj is None or inspect.ismodule(obj):
        try:  # package.module without NAME: say what it holds
            sub = obj if obj is not None else importlib.import_module(f"{modname}.{name}")
        except Exception:  # noqa: BLE001 - not a submodule either: NAME is missing
            sub = None
        if sub is not None:
            cands = _candidates(sub)
            raise ModelError(f"--model {spec!r} is a module; name the model in it as {spec}:NAME (its nn.Module "
                             f"classes and callables: {', '.join(cands[:20]) or 'none'})")
        raise _missing_name(spec, f"module {modname!r}", name, mod)
    module = _build(spec, obj, name, kwargs)
    return UserModel(module, name, _module_shape(module), "module", spec, kwargs)


def _is_dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def resolve_model(spec: str, model_args: str | Mapping[str, Any] | None = None, *,
                  input_shape: Sequence[int] | None = None) -> UserModel:
    """The model a ``--model`` spec names, built with ``model_args`` (see the module docstring for
    the forms). ``input_shape`` (one sample's shape) is needed only for a TorchScript file, which keeps
    no example input. Raises :class:`ModelError` naming the spec and what failed."""
    kwargs = parse_model_args(model_args)
    spec = str(spec)
    if spec in MODELS:
        entry = MODELS[spec]
        module = _build(spec, entry.factory, spec, kwargs) if kwargs else entry.build()
        return UserModel(module, spec, tuple(entry.input_shape), "builtin", spec, kwargs, entry.dataset)
    left, colon, right = spec.rpartition(":")
    if colon and right.isidentifier() and left:
        if left.endswith(".py") or os.sep in left or "/" in left:
            return _from_file(spec, left, right, kwargs)
        if _is_dotted(left):
            return _from_module(spec, left, right, kwargs)
        raise ModelError(f"--model {spec!r}: {left!r} is neither a .py file nor a dotted module name")
    if colon and not right.isidentifier() and not Path(spec).exists():
        raise ModelError(f"--model {spec!r}: {right!r} after ':' is not a Python name")
    path = Path(spec).expanduser()
    if spec.endswith(".py"):
        return _from_file(spec, spec, None, kwargs)
    if path.is_file():
        return _saved_model(spec, path, kwargs, input_shape)
    if _is_dotted(spec) and "." in spec:
        modname, _, name = spec.rpartition(".")
        return _from_module(spec, modname, name, kwargs)
    if os.sep in spec or "/" in spec or Path(spec).suffix in (".pt2", ".pt", ".pth", ".ts", ".jit"):
        raise ModelError(f"--model {spec!r}: file {spec!r} does not exist")
    raise ModelError(f"--model {spec!r} is unknown: give a built-in model ({', '.join(MODELS)}), "
                     "path/to/file.py:NAME, package.module:NAME, or a torch.export / TorchScript file")


# --------------------------------------------------------------------------------------------------
# Whole saved models
# --------------------------------------------------------------------------------------------------
def _archive_kind(path: Path) -> str:
    """``exported-program``, ``torchscript``, ``pickle`` (a torch.save file) or ``unknown``."""
    if not zipfile.is_zipfile(path):
        return "unknown"
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return "unknown"
    tails = {n.split("/", 1)[1] if "/" in n else n for n in names}
    if "archive_format" in tails or any(t.startswith("models/") and t.endswith(".json") for t in tails):
        return "exported-program"
    if any(t.startswith("code/") for t in tails) and "constants.pkl" in tails:
        return "torchscript"
    if "data.pkl" in tails:
        return "pickle"
    return "unknown"


def _saved_model(spec: str, path: Path, kwargs: dict[str, Any], input_shape: Sequence[int] | None) -> UserModel:
    kind = _archive_kind(path)
    if kind in ("exported-program", "torchscript") and kwargs:
        raise ModelError(f"--model {spec!r}: a saved {kind.replace('-', ' ')} takes no --model-args "
                         f"(got {', '.join(kwargs)}); they apply to a class or factory")
    if kind == "exported-program":
        try:
            ep = torch.export.load(str(path))
        except Exception as exc:  # noqa: BLE001 - any unreadable file is a one-line user error
            raise ModelError(f"--model {spec!r}: cannot load the ExportedProgram: {_first_line(exc)}") from None
        module, shape = lift_exported_program(ep, where=f"--model {spec!r}")
        return UserModel(module, path.stem, shape, "exported-program", spec)
    if kind == "torchscript":
        module, shape = _from_torchscript(spec, path, input_shape)
        return UserModel(module, path.stem, shape, "torchscript", spec)
    if kind == "pickle":
        raise ModelError(f"--model {spec!r} is a torch.save file (a checkpoint or a pickled model), not a model "
                         "ADT can build: give the model's code (path/to/file.py:NAME or package.module:NAME) and "
                         "this file as the checkpoint (--from-checkpoint), or save the model with "
                         "torch.export.save")
    raise ModelError(f"--model {spec!r}: {str(path)!r} is neither a torch.export (.pt2) nor a TorchScript file")


def _from_torchscript(spec: str, path: Path, input_shape: Sequence[int] | None) -> tuple[nn.Module, tuple[int, ...]]:
    if input_shape is None:
        raise ModelError(f"--model {spec!r}: a TorchScript file keeps no example input; give one sample's input "
                         "shape (e.g. 3,32,32), or save the model with torch.export.save (dynamic batch) instead")
    shape = tuple(int(d) for d in input_shape)
    try:
        ts = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"--model {spec!r}: cannot load the TorchScript file: {_first_line(exc)}") from None
    params = [n for n, _ in ts.named_parameters()]
    ts.eval()
    # batch 2: torch.export specializes sizes 0 and 1, and the converter marks every dim AUTO (dynamic)
    example = (torch.randn(2, *shape),)
    try:
        from torch._export.converter import TS2EPConverter

        with warnings.catch_warnings(), _quiet_torch_logs():
            warnings.simplefilter("ignore")
            ep = TS2EPConverter(ts, example).convert()
    except Exception as exc:  # noqa: BLE001 - the converter fails in many ways on what it does not support
        raise ModelError(f"--model {spec!r}: torch could not convert this TorchScript to an ExportedProgram "
                         f"({_first_line(exc)}); save the model with torch.export.save, or give its class "
                         "(path/to/file.py:NAME) and a state_dict checkpoint") from None
    module, _ = lift_exported_program(ep, where=f"--model {spec!r}", parameters=params)
    have = dict(module.named_parameters())
    lost = [n for n in params if n not in have]
    if lost:  # e.g. a scripted nn.LSTM: its weights come out as anonymous constants, which would not train
        raise ModelError(f"--model {spec!r}: converting this TorchScript turned {_listed(lost, 'parameter')} into "
                         "constants that would not train; save the model with torch.export.save, or give its class "
                         "(path/to/file.py:NAME) and a state_dict checkpoint")
    module.eval()
    with torch.no_grad():
        try:
            want, got = ts(*example), module(*example)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"--model {spec!r}: the converted TorchScript model does not run: {_first_line(exc)}") from None
    _check_same(spec, want, got, "the TorchScript module")
    module.train()
    return module, shape


@contextmanager
def _quiet_torch_logs() -> Iterator[None]:
    # torch.export logs "0/1 specialized" warnings for every size-1 dimension of the example input
    import logging

    log = logging.getLogger("torch._export")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _check_same(spec: str, want: Any, got: Any, what: str) -> None:
    wl = [t for t in torch.utils._pytree.tree_leaves(want) if isinstance(t, torch.Tensor)]
    gl = [t for t in torch.utils._pytree.tree_leaves(got) if isinstance(t, torch.Tensor)]
    ok = len(wl) == len(gl) and all(
        a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5 * max(1.0, a.abs().max().item()))
        for a, b in zip(wl, gl))
    if not ok:
        raise ModelError(f"--model {spec!r}: the converted model does not compute what {what} computes; save the "
                         "model with torch.export.save, or give its class (path/to/file.py:NAME)")


# --------------------------------------------------------------------------------------------------
# The lift: aten calls on attributes -> nn modules
# --------------------------------------------------------------------------------------------------
_aten = torch.ops.aten
_CONV_ND = {_aten.conv1d.default: 1, _aten.conv2d.default: 2, _aten.conv3d.default: 3}
_CONV_PAD = {getattr(_aten, f"conv{d}d").padding: d for d in (1, 2, 3) if hasattr(getattr(_aten, f"conv{d}d"), "padding")}
_CONV_CLS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_BN_CLS = {2: nn.BatchNorm1d, 3: nn.BatchNorm1d, 4: nn.BatchNorm2d, 5: nn.BatchNorm3d}
_TRANSPOSE = {_aten.t.default, _aten.numpy_T.default} if hasattr(_aten, "numpy_T") else {_aten.t.default}


def _attr(root: nn.Module, target: str) -> Any:
    obj: Any = root
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_const(value: Any) -> bool:
    if isinstance(value, torch.fx.Node):
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_const(v) for v in value)
    return value is None or isinstance(value, (bool, int, float, str))


def _tuple(value: Any, d: int) -> tuple[int, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(int(v) for v in value) if len(value) == d else tuple(int(value[0]) for _ in range(d))
    return (int(value),) * d


def _dims(node: Any) -> int | None:
    val = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return val.dim() if isinstance(val, torch.Tensor) else None


def _args(node: torch.fx.Node) -> dict[str, Any] | None:
    """``node``'s arguments by schema name, defaults filled in; None when they cannot be matched."""
    schema = getattr(node.target, "_schema", None)
    if schema is None:
        return None
    out: dict[str, Any] = {}
    for i, a in enumerate(schema.arguments):
        if i < len(node.args):
            out[a.name] = node.args[i]
        elif a.name in node.kwargs:
            out[a.name] = node.kwargs[a.name]
        elif a.has_default_value():
            out[a.name] = a.default_value
        else:
            return None
    return out if len(node.args) <= len(schema.arguments) and set(node.kwargs) <= set(out) else None


class _Lifter:
    def __init__(self, gm: torch.fx.GraphModule) -> None:
        self.gm = gm
        self.graph = gm.graph
        # how often each attribute is read: a tensor read anywhere else cannot move into a module
        self.reads: dict[str, int] = {}
        for n in self.graph.nodes:
            if n.op == "get_attr":
                self.reads[n.target] = self.reads.get(n.target, 0) + len(n.users)
        self.lifted: list[str] = []
        self.dropouts = 0

    def _tensor_arg(self, node: Any, user: torch.fx.Node) -> tuple[str, torch.Tensor] | None:
        """(target, tensor) when ``node`` is a get_attr read by ``user`` and nothing else."""
        if not (isinstance(node, torch.fx.Node) and node.op == "get_attr" and isinstance(node.target, str)):
            return None
        if list(node.users) != [user] or self.reads.get(node.target) != 1:
            return None
        t = _attr(self.gm, node.target)
        return (node.target, t) if isinstance(t, torch.Tensor) else None

    def _place(self, targets: dict[str, str], new: nn.Module, kind: str) -> str | None:
        """Put ``new`` where its tensors lived (``targets``: attribute path -> its name in ``new``, the
        weight first), in place of their owner module, so that every state_dict key stays what it was;
        only when the names match (``conv.weight`` is ``weight``) and that owner holds nothing else.
        Tensors of the root (a bare exported ``nn.Linear``) move into a new child named ``kind``.
        Returns the module's path, or None (the call stays as it is: e.g. the packed in-projection of
        ``nn.MultiheadAttention``, whose owner holds more, stays dense as it does in the original)."""
        owners = {t.rpartition(".")[0] for t in targets}
        if len(owners) != 1:
            return None
        owner_path = owners.pop()
        owner = self.gm.get_submodule(owner_path) if owner_path else self.gm
        local = {t.rpartition(".")[2] for t in targets}
        held = {k for k, _ in itertools.chain(owner.named_parameters(recurse=False), owner.named_buffers(recurse=False))}
        if owner_path:
            renamed = any(t.rpartition(".")[2] != name for t, name in targets.items())
            if renamed or held - local - {"num_batches_tracked"} or type(owner) not in (nn.Module, type(new)):
                return None
            for cname, child in list(owner.named_children()):
                new.add_module(cname, child)
            parent_path, _, leaf = owner_path.rpartition(".")
            parent = self.gm.get_submodule(parent_path) if parent_path else self.gm
            setattr(parent, leaf, new)
            return owner_path
        main = next(iter(targets)).rpartition(".")[2]
        base = kind if main in ("weight", "running_mean") else f"{main}_{kind}"
        leaf = base
        for i in itertools.count(1):
            if not hasattr(owner, leaf):
                break
            leaf = f"{base}{i}"
        for k in local:
            delattr(owner, k)
        owner.add_module(leaf, new)
        return f"{owner_path}.{leaf}" if owner_path else leaf

    @staticmethod
    def _param(t: torch.Tensor | None) -> nn.Parameter | None:
        if t is None:
            return None
        return t if isinstance(t, nn.Parameter) else nn.Parameter(t.detach().clone())

    def _erase(self, node: torch.fx.Node) -> None:
        for u in list(node.users):  # unused tuple reads (batch norm's saved statistics)
            if not u.users:
                self.graph.erase_node(u)
        if not node.users:
            self.graph.erase_node(node)

    def _swap(self, node: torch.fx.Node, path: str, inp: Any, consumed: list[Any],
              result: torch.fx.Node | None = None) -> None:
        """Call module ``path`` on ``inp`` instead of ``node`` (whose value is ``result``: node itself,
        or the getitem that reads its first output), then drop what only fed ``node``."""
        result = result or node
        with self.graph.inserting_before(node):
            call = self.graph.call_module(path, (inp,))
        call.meta = dict(result.meta)
        result.replace_all_uses_with(call)
        if result is not node:
            self.graph.erase_node(result)
        self._erase(node)
        for n in consumed:
            if isinstance(n, torch.fx.Node) and not n.users:
                self.graph.erase_node(n)
        self.lifted.append(path)

    def conv(self, node: torch.fx.Node) -> None:
        a = _args(node)
        if a is None:
            return
        w = self._tensor_arg(a["weight"], node)
        if w is None or w[1].dim() < 3:
            return
        b = self._tensor_arg(a["bias"], node) if a["bias"] is not None else None
        if a["bias"] is not None and (b is None or b[1].dim() != 1):
            return
        if a.get("transposed") or not _is_const([a["stride"], a["padding"], a["dilation"], a["groups"]]):
            return
        if a.get("output_padding") is not None and any(int(p) for p in a["output_padding"]):
            return
        d, weight, groups = w[1].dim() - 2, w[1], int(a["groups"])
        padding = a["padding"]
        if isinstance(padding, str) and padding not in ("same", "valid"):
            return
        pad = padding if isinstance(padding, str) else _tuple(padding, d)
        try:
            conv = _CONV_CLS[d](weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), _tuple(a["stride"], d),
                                pad, _tuple(a["dilation"], d), groups, bias=b is not None, device="meta")
        except ValueError:  # e.g. padding="same" with a stride: leave the call as it is
            return
        conv.weight = self._param(weight)
        conv.bias = self._param(b[1]) if b is not None else None
        path = self._place({w[0]: "weight", **({b[0]: "bias"} if b else {})}, conv, "conv")
        if path is not None:
            self._swap(node, path, a["input"], [a["weight"], a["bias"]])

    def linear(self, node: torch.fx.Node) -> None:
        a = _args(node)
        if a is not None:
            self._linear(node, a["input"], a["weight"], a["bias"], None)

    def addmm(self, node: torch.fx.Node) -> None:
        # core-ATen linear: addmm(bias, x, t(weight)) / mm(x, t(weight)), addmm only with beta = alpha = 1
        a = _args(node)
        if a is None or a.get("beta", 1) != 1 or a.get("alpha", 1) != 1:
            return
        inp, wt = (a["mat1"], a["mat2"]) if "mat1" in a else (a["self"], a["mat2"])
        bias = a["self"] if "mat1" in a else None
        if not (isinstance(wt, torch.fx.Node) and wt.op == "call_function" and len(wt.users) == 1):
            return
        if not (wt.target in _TRANSPOSE or (wt.target == _aten.permute.default and list(wt.args[1]) in ([1, 0], [-1, -2]))):
            return
        self._linear(node, inp, wt.args[0], bias, wt)

    def _linear(self, node: torch.fx.Node, inp: Any, wn: Any, bn_: Any, transpose: torch.fx.Node | None) -> None:
        w = self._tensor_arg(wn, transpose or node)
        if w is None or w[1].dim() != 2:
            return
        b = self._tensor_arg(bn_, node) if bn_ is not None else None
        if bn_ is not None and (b is None or b[1].dim() != 1):
            return
        lin = nn.Linear(w[1].shape[1], w[1].shape[0], bias=b is not None, device="meta")
        lin.weight = self._param(w[1])
        lin.bias = self._param(b[1]) if b is not None else None
        path = self._place({w[0]: "weight", **({b[0]: "bias"} if b else {})}, lin, "linear")
        if path is not None:
            self._swap(node, path, inp, [transpose, wn, bn_])

    def batch_norm(self, node: torch.fx.Node) -> None:
        a = _args(node)
        if a is None or not _is_const([a["momentum"], a["eps"]]):
            return
        result = node
        if node.target != _aten.batch_norm.default:  # (out, saved mean, saved invstd): only out may be read
            reads = list(node.users)
            if not all(u.op == "call_function" and u.target is operator.getitem for u in reads):
                return
            outs = [u for u in reads if u.args[1] == 0]
            if len(outs) != 1 or any(u.users for u in reads if u.args[1] != 0):
                return
            result = outs[0]
        names = ["running_mean", "running_var"] + (["weight", "bias"] if a["weight"] is not None else [])
        if (a["weight"] is None) != (a["bias"] is None):
            return
        tensors = [self._tensor_arg(a[k], node) for k in names]
        if any(t is None or t[1].dim() != 1 for t in tensors):
            return
        dims = _dims(a["input"])
        cls = _BN_CLS.get(dims, nn.BatchNorm2d) if dims is not None else nn.BatchNorm2d
        affine = len(names) == 4
        momentum = None if a["momentum"] is None else float(a["momentum"])
        bn = cls(tensors[0][1].shape[0], eps=float(a["eps"]), momentum=momentum, affine=affine, device="meta")
        bn.running_mean, bn.running_var = tensors[0][1], tensors[1][1]
        if affine:
            bn.weight, bn.bias = self._param(tensors[2][1]), self._param(tensors[3][1])
        owner_path = tensors[0][0].rpartition(".")[0]
        nbt = getattr(self.gm.get_submodule(owner_path) if owner_path else self.gm, "num_batches_tracked", None)
        bn.num_batches_tracked = nbt if isinstance(nbt, torch.Tensor) else torch.tensor(0, dtype=torch.long)
        path = self._place({t[0]: k for t, k in zip(tensors, names)}, bn, "bn")
        if path is not None:
            self._swap(node, path, a["input"], [a[k] for k in names], result)

    def dropout(self, node: torch.fx.Node) -> None:
        a = _args(node)
        if a is None or not _is_const(a["p"]):
            return
        name = f"dropout_{self.dropouts}"
        while hasattr(self.gm, name):
            self.dropouts += 1
            name = f"dropout_{self.dropouts}"
        self.dropouts += 1
        self.gm.add_module(name, nn.Dropout(float(a["p"])))
        self._swap(node, name, a["input"], [])

    def run(self) -> list[str]:
        for node in list(self.graph.nodes):
            if node.op != "call_function" or getattr(node, "_erased", False):
                continue
            t = node.target
            if t in _CONV_ND or t in _CONV_PAD or t == _aten.convolution.default:
                self.conv(node)
            elif t == _aten.linear.default:
                self.linear(node)
            elif t in (_aten.addmm.default, _aten.mm.default):
                self.addmm(node)
            elif t in (_aten.batch_norm.default, _aten._native_batch_norm_legit_no_training.default):
                self.batch_norm(node)
            elif t == _aten.dropout.default:
                self.dropout(node)
        return self.lifted


def lift_graph_module(gm: torch.fx.GraphModule) -> list[str]:
    """Replace, in place, ``gm``'s aten conv / linear / batch-norm / dropout calls on its own tensors
    (constant other arguments) by calls of real ``nn`` modules holding those tensors (module
    docstring). Returns the paths of the new modules. Buffers that a lifted conv or linear uses as
    weight or bias become Parameters (trainable)."""
    lifted = _Lifter(gm).run()
    # reads nothing uses (ep.module() reads num_batches_tracked, unused parameters): a read of a lifted
    # module's attribute would fail once ADT replaces that module (BatchNorm -> affine at export)
    for node in list(gm.graph.nodes):
        if node.op == "get_attr" and not node.users:
            gm.graph.erase_node(node)
    gm.graph.lint()
    gm.recompile()
    return lifted


def _plain(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """A plain GraphModule with all of ``gm``'s state (the used and the unused: state_dict keys stay
    those of the original model), without what ``ep.module()`` adds: its refusal of ``train()`` /
    ``eval()``, its input-constraint hooks and its ``_guards_fn`` (which asserts the exported input
    sizes, a static batch as == N; the batch check after the lift decides whether the graph really
    depends on the batch size)."""
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and node.target == "_guards_fn" and not node.users:
            gm.graph.erase_node(node)
    gm.graph.lint()
    new = torch.fx.GraphModule(gm, gm.graph)  # copies only what the graph reads: put the rest back
    for name, child in gm.named_children():
        if name != "_guards_fn":
            setattr(new, name, child)
    for name, p in gm.named_parameters(recurse=False):
        new.register_parameter(name, p)
    for name, b in gm.named_buffers(recurse=False):
        new.register_buffer(name, b, persistent=name not in gm._non_persistent_buffers_set)
    new.recompile()
    return new


def _examples(ep: Any) -> tuple[torch.Tensor, ...] | None:
    ex = getattr(ep, "example_inputs", None)
    if ex is not None:
        args, kwargs = ex
        leaves = list(args) + list(kwargs.values())
        if leaves and all(isinstance(t, torch.Tensor) for t in leaves) and not kwargs:
            return tuple(t.detach().cpu() for t in leaves)
    user = set(ep.graph_signature.user_inputs)
    vals = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]
    if not vals or not all(isinstance(v, torch.Tensor) for v in vals):
        return None
    try:
        shapes = [tuple(int(d) for d in v.shape) for v in vals]  # symbolic sizes: their example hint is unknown
    except (TypeError, ValueError):
        return None
    gen = torch.Generator().manual_seed(0)
    return tuple(torch.randn(s, generator=gen).to(v.dtype) if v.is_floating_point() else torch.zeros(s, dtype=v.dtype)
                 for s, v in zip(shapes, vals))


def _batch_is_dynamic(ep: Any) -> bool:
    user = set(ep.graph_signature.user_inputs)
    vals = [n.meta.get("val") for n in ep.graph.nodes if n.op == "placeholder" and n.name in user]
    return bool(vals) and all(isinstance(v, torch.Tensor) and v.dim() >= 1 and not isinstance(v.shape[0], int)
                              for v in vals)


def _check_batch(where: str, module: nn.Module, examples: tuple[torch.Tensor, ...], dynamic: bool) -> None:
    """The lifted graph (eval mode) must run at another batch size and give each sample the same output.

    A program exported with a fixed batch size may have that size baked into its ops (a reshape to
    [2, -1], an LSTM's zero state [1, 2, h]); running such a graph at another size can crash torch
    natively rather than raise, so it is first traced again with a symbolic batch dimension (fake
    tensors only), which raises on any op that needs the old size."""
    n = examples[0].shape[0]
    bigger = tuple(torch.cat([x, x[:1]]) for x in examples)
    hint = ("was it exported with a fixed batch size of {n}? Export with a dynamic batch dimension, e.g. "
            "torch.export.export(model.eval(), (x,), dynamic_shapes=({{0: torch.export.Dim('batch')}},))")
    if not dynamic:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.export.export(module, bigger, dynamic_shapes=tuple({0: torch.export.Dim("batch")} for _ in bigger))
        except Exception as exc:  # noqa: BLE001 - any failure means: not batch-generic
            raise ModelError(f"{where}: the model does not run at other batch sizes ({_first_line(exc)}); "
                             + hint.format(n=n)) from None
    with torch.no_grad():
        try:
            ref, out = module(*examples), module(*bigger)
        except Exception as exc:  # noqa: BLE001
            raise ModelError(f"{where}: the model does not run at batch size {n + 1} ({_first_line(exc)}); "
                             + hint.format(n=n)) from None
    rl = [t for t in torch.utils._pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
    ol = [t for t in torch.utils._pytree.tree_leaves(out) if isinstance(t, torch.Tensor)]
    ok = len(rl) == len(ol) and all(
        o.dim() >= 1 and o.shape[0] == n + 1 and o.shape[1:] == r.shape[1:]
        and torch.allclose(o[:n].float(), r.float(), rtol=1e-4, atol=1e-5 * max(1.0, r.abs().max().item()))
        for r, o in zip(rl, ol))
    if not ok:
        raise ModelError(f"{where}: in eval mode, each sample's output depends on the batch size; " + hint.format(n=n))


def lift_exported_program(ep: Any, *, where: str = "ExportedProgram",
                          parameters: Sequence[str] | None = None) -> tuple[nn.Module, tuple[int, ...] | None]:
    """``ep.module()`` with its convs, linears, BatchNorms and dropouts as ``nn`` modules
    (:func:`lift_graph_module`), its export-time input guards removed, in train mode, and one sample's
    input shape (from the program's example inputs; None when it has several inputs or none stored).
    ``parameters``: names to make trainable Parameters where the program holds them as buffers (the
    TorchScript converter does). Raises :class:`ModelError` when the graph only runs at its exported
    batch size."""
    try:
        gm = _plain(ep.module())
    except Exception as exc:  # noqa: BLE001
        raise ModelError(f"{where}: cannot rebuild a module from the ExportedProgram: {_first_line(exc)}") from None
    for name in parameters or ():
        owner_path, _, leaf = name.rpartition(".")
        try:
            owner = gm.get_submodule(owner_path) if owner_path else gm
        except AttributeError:
            continue
        t = owner._buffers.get(leaf)
        if isinstance(t, torch.Tensor):
            del owner._buffers[leaf]
            owner.register_parameter(leaf, nn.Parameter(t.detach().clone()))
    lift_graph_module(gm)
    examples = _examples(ep)
    gm.eval()
    if examples is not None:
        _check_batch(where, gm, examples, _batch_is_dynamic(ep))
    gm.train()
    shape = tuple(int(d) for d in examples[0].shape[1:]) if examples is not None and len(examples) == 1 else None
    return gm, shape


# --------------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CheckpointLoad:
    """What :func:`load_checkpoint` did: the keys the model has that the checkpoint lacks (``missing``)
    and the checkpoint's keys the model does not have (``unexpected``), both empty when strict; the
    dict key the state_dict was found under (``"model"``, ``"state_dict"`` or None for a raw one), and
    the prefix stripped from every key (``"module."`` from DDP, ``"_orig_mod."`` from torch.compile, or
    ``""``)."""

    missing: tuple[str, ...]
    unexpected: tuple[str, ...]
    container_key: str | None
    stripped_prefix: str


_CONTAINER_KEYS = ("model", "state_dict", "model_state_dict")
_PREFIXES = ("module.", "_orig_mod.")


def _is_state_dict(obj: Any) -> bool:
    return (isinstance(obj, Mapping) and bool(obj) and all(isinstance(k, str) for k in obj)
            and all(isinstance(v, torch.Tensor) for v in obj.values()))


def _listed(keys: Sequence[str], what: str, plural: str | None = None) -> str:
    shown = ", ".join(keys[:_MAX_LISTED]) + (f", ... ({len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")
    return f"{len(keys)} {what if len(keys) == 1 else plural or what + 's'} ({shown})"


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> CheckpointLoad:
    """Load a dense state_dict from ``path`` into ``model`` (in place) with
    ``torch.load(weights_only=True, map_location="cpu")``: a raw state_dict, or one under ``"model"``,
    ``"state_dict"`` or ``"model_state_dict"``; a ``module.`` (DDP) or ``_orig_mod.`` (torch.compile)
    prefix on every key is stripped. ``strict``: every key must match. Raises :class:`CheckpointError`
    for a missing or unreadable file, one that would need ``weights_only=False`` (it may execute code:
    refused), content that is no state_dict, mismatched keys (naming up to five missing and five
    unexpected, with counts) and mismatched shapes (even when not strict)."""
    p = Path(os.fspath(path))
    if not p.is_file():
        raise CheckpointError(f"checkpoint {str(p)!r} does not exist")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        text = str(exc)
        # the weights-only unpickler refuses globals, reduce calls and object builds (code), and opcodes
        # it does not know ("Unsupported operand": a corrupt file, or not a pickle at all)
        if "Weights only load failed" in text and "Unsupported operand" not in text:
            found = re.search(r"GLOBAL ([\w.]+)", text)
            detail = f" (a pickled {found.group(1)})" if found else ""
            raise CheckpointError(
                f"checkpoint {str(p)!r} holds more than tensors{detail}: loading it would need weights_only=False, "
                "which may execute code from the file, so it is refused; save model.state_dict() instead") from None
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read as a torch.save file: {_first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - any unreadable file is a one-line user error
        raise CheckpointError(f"checkpoint {str(p)!r} cannot be read as a torch.save file: {_first_line(exc)}") from None
    container = None
    state = obj
    if isinstance(obj, Mapping) and not _is_state_dict(obj):
        for key in _CONTAINER_KEYS:
            if _is_state_dict(obj.get(key)):
                container, state = key, obj[key]
                break
    if not _is_state_dict(state):
        if isinstance(obj, Mapping):
            keys = ", ".join(map(repr, list(obj)[:8])) + (", ..." if len(obj) > 8 else "")
            got = f"a dict with keys {keys}" if obj else "an empty dict"
        else:
            got = f"a {type(obj).__name__}"
        raise CheckpointError(f"checkpoint {str(p)!r} holds {got}, not a state_dict (names -> tensors) nor "
                              f"{{'model': state_dict}} / {{'state_dict': state_dict}}")
    state = dict(state)
    prefix = ""
    for pre in _PREFIXES:
        if all(k.startswith(pre) for k in state):
            state = {k[len(pre):]: v for k, v in state.items()}
            prefix = pre
            break
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {list(state[k].shape)}, model {list(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = []
    if strict and missing:
        problems.append(_listed(missing, "missing key"))
    if strict and unexpected:
        problems.append(_listed(unexpected, "unexpected key"))
    if shapes:
        problems.append(_listed(shapes, "shape mismatch", "shape mismatches"))
    if problems:
        name = type(model).__name__
        hint = "; non-strict loading skips missing and unexpected keys, never wrong shapes" if strict and not shapes else ""
        raise CheckpointError(f"checkpoint {str(p)!r} does not fit the model ({name}): {'; '.join(problems)}{hint}")
    model.load_state_dict(state, strict=False)
    return CheckpointLoad(tuple(missing), tuple(unexpected), container, prefix)
