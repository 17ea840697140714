"""ADT's torch-free runtime: decode a .adt file, rebuild its weights and run it with NumPy
(or onnxruntime). Needs only numpy and bitarray; onnxruntime is imported only for that engine.

    import adt.runtime as rt
    m = rt.load("model.adt")            # engine="numpy" | "onnxruntime"
    y = m(x)                            # x: float32 [N, ...]
    m.predict(raw_uint8)                # raw samples: the file's input convention applied; class ids or names
"""
from .errors import (
    AdtBudgetError, AdtEngineError, AdtExecutionError, AdtGraphError, AdtInputError, AdtNoArchitectureError,
    AdtUnsupportedOpError,
)
from .format import AdtArchitectureError, AdtError, AdtFile, AdtReadError, read_adt
from . import numpy_ops as _numpy_ops  # noqa: F401  (registers the engine's issue-19 ops)
from .model import ENGINES, Model, Weights, load
from .preprocess import AdtPreprocessError, InputConvention, labels_to_json, parse_labels
from .rebuild import DEFAULT_MAX_MEMORY, iter_weights, rebuild_weights, tucker_to_tensor

__all__ = [
    "AdtArchitectureError", "AdtBudgetError", "AdtEngineError", "AdtError", "AdtExecutionError", "AdtFile",
    "AdtGraphError", "AdtInputError", "AdtNoArchitectureError", "AdtPreprocessError", "AdtReadError",
    "AdtUnsupportedOpError", "DEFAULT_MAX_MEMORY", "ENGINES", "InputConvention", "Model", "Weights", "iter_weights",
    "labels_to_json", "load", "parse_labels",
    "read_adt", "rebuild_weights", "tucker_to_tensor",
]
