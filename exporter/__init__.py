"""ADT's PyTorch side: plan, apply ADA-Tucker / SCADA-Tucker, train, then export a .adt file.

    from adt.exporter import build_model, plan_model, apply_ada_tucker, train, TrainConfig, export_adt
    model = build_model("lenet5")
    plan = plan_model(model, 2600)          # or preset("lenet5-ada"), or overrides from TOML/JSON
    apply_ada_tucker(model, plan)           # layers keep their class; weights become Tucker forms
    train(model, train_loader, TrainConfig(epochs=20))
    export_adt(model, "lenet5.adt", input_shape=(1, 28, 28), q=512)

The modules, in import order (each imports only those before it, and the runtime):
``errors``, ``planner`` (reshapes and cores), ``models`` (the built-in registry), ``fakequant``
(Eq. 13 with a straight-through gradient), ``decompose`` (HOOI / CP / SCADA ALS in NumPy),
``factorize`` (the Tucker parametrization, apply ADA/SCADA/CP, init), ``data`` (MNIST loaders),
``fit`` (the one training loop, accuracy), ``batchnorm`` (BatchNorm stored as scale and shift),
``quantplan`` (inventory, groups, Q and b),
``qat`` (quantization-aware fine-tuning), ``onnx_graph`` (the weightless architecture),
``export`` (the file and its report).

Needs the ``export`` extra (torch, tensorly); the device-side runtime never imports this package.
"""
from adt.runtime.format import AdtError

from .data import mnist_loaders, mnist_test_set, tensor_loader
from .errors import CheckpointError, ExportCheckError, ModelError, PlanError, TrainConfigError
from .export import ExportCheck, ExportOptions, ExportReport, dequantized_weights, export_adt
from .factorize import (
    INITS, METHODS, TuckerWeight, apply_ada_tucker, apply_scada_tucker, count_params, freeze, reconstruction_errors,
    shared_cores, tucker_layers,
)
from .fakequant import QuantSpec, fake_quant_ste
from .fit import SCHEDULES, TrainConfig, TrainResult, evaluate, train
from .models import MODELS, BuiltinModel, build_model
from .onnx_graph import architecture_bytes
from .planner import (
    PRESET_INFO, PRESETS, LayerPlan, load_overrides, model_params, plan_layer, plan_model, plan_params, plan_table,
    preset,
)
from .qat import QAT_SCHEDULES, QatResult, qat_finetune
from .quantplan import DEFAULT_Q, GROUPINGS, KINDS, GroupSpec, QuantPlan, choose_b, make_quant_plan

__all__ = [
    "AdtError", "PlanError", "ModelError", "CheckpointError", "TrainConfigError", "ExportCheckError",
    "PRESETS", "PRESET_INFO", "preset", "load_overrides", "LayerPlan", "model_params", "plan_layer", "plan_model",
    "plan_params", "plan_table",
    "MODELS", "BuiltinModel", "build_model",
    "TuckerWeight", "apply_ada_tucker", "apply_scada_tucker", "tucker_layers", "shared_cores", "count_params",
    "freeze", "reconstruction_errors", "METHODS", "INITS",
    "QuantSpec", "fake_quant_ste",
    "TrainConfig", "TrainResult", "train", "evaluate", "SCHEDULES",
    "qat_finetune", "QatResult", "QAT_SCHEDULES",
    "QuantPlan", "GroupSpec", "make_quant_plan", "choose_b", "GROUPINGS", "KINDS", "DEFAULT_Q",
    "export_adt", "ExportOptions", "ExportReport", "ExportCheck", "dequantized_weights",
    "mnist_loaders", "mnist_test_set", "tensor_loader",
    "architecture_bytes",
]
