"""The onnxruntime engine: the dense ONNX model (architecture + rebuilt weights as initializers) run
by ``onnxruntime.InferenceSession``. onnxruntime is imported only when this engine is chosen; the
model is assembled at the protobuf wire level (:mod:`adt.runtime.onnx_proto`), so the ``onnx``
package is not needed.

The weights do not go through protobuf at all: the graph gets EXTERNAL placeholders and the rebuilt
arrays are handed over as OrtValues (``add_external_initializers``, zero-copy), which makes session
creation faster than loading the equivalent dense .onnx file. Should an onnxruntime build refuse
that, the engine falls back to the serialized dense model (:meth:`Model.onnx_bytes`)."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import AdtEngineError, AdtExecutionError
from .onnx_proto import add_initializers

__all__ = ["OrtEngine", "session_options"]


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise AdtEngineError(
            f"the onnxruntime engine needs the onnxruntime package ({exc}); pip install 'adt[onnx]' "
            "or use engine='numpy'") from None
    return onnxruntime


def session_options():
    """The SessionOptions this engine uses (also used by ``adt bench`` for a fair dense baseline):
    onnxruntime's defaults (all graph optimizations), with its warnings silenced."""
    so = _ort().SessionOptions()
    so.log_severity_level = 3
    return so


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


class OrtEngine:
    """``run(feeds) -> outputs`` through an InferenceSession on the CPU provider."""

    def __init__(self, architecture: bytes, weights: Mapping[str, np.ndarray], output_names: list[str]):
        ort = _ort()
        self.output_names = output_names
        self.external = True
        try:
            arrays = {k: np.ascontiguousarray(v) for k, v in weights.items()}
            # the OrtValues share the arrays' memory: keep both alive as long as the session
            self._values = [ort.OrtValue.ortvalue_from_numpy(a) for a in arrays.values()]
            so = session_options()
            so.add_external_initializers(list(arrays), self._values)
            self.session = ort.InferenceSession(add_initializers(architecture, arrays, external=True),
                                                sess_options=so, providers=["CPUExecutionProvider"])
            self._arrays = arrays
            return
        except Exception:  # older onnxruntime, or a build that refuses in-memory external data
            self._values = []
            self.external = False
        try:
            self.session = ort.InferenceSession(add_initializers(architecture, weights), sess_options=session_options(),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            raise AdtExecutionError(f"onnxruntime cannot load the model: {_first_line(exc)}") from None

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(self.output_names, dict(feeds))
        except Exception as exc:
            raise AdtExecutionError(f"onnxruntime failed: {_first_line(exc)}") from None
