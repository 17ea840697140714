"""The onnxruntime engine: the dense ONNX model (architecture + rebuilt weights as initializers) run
by ``onnxruntime.InferenceSession``. onnxruntime is imported only when this engine is chosen; the
dense model is assembled at the protobuf wire level (:func:`adt.runtime.onnx_proto.add_initializers`),
so neither the ``onnx`` package nor a copy of every weight through its Python objects is needed."""
from __future__ import annotations

from typing import Mapping

import numpy as np

from .errors import AdtEngineError, AdtExecutionError


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


class OrtEngine:
    """``run(feeds) -> outputs`` through an InferenceSession on the CPU provider."""

    def __init__(self, onnx_bytes: bytes, output_names: list[str]):
        ort = _ort()
        try:
            self.session = ort.InferenceSession(onnx_bytes, sess_options=session_options(),
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AdtExecutionError(f"onnxruntime cannot load the model: {first}") from None
        self.output_names = output_names

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        try:
            return self.session.run(self.output_names, dict(feeds))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise AdtExecutionError(f"onnxruntime failed: {first}") from None
