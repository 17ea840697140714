"""ADT's PyTorch side: plan, apply ADA-Tucker / SCADA-Tucker, train, then export a .adt file.

    from adt.exporter import build_model, plan_model, apply_ada_tucker, train, TrainConfig
    model = build_model("lenet5")
    plan = plan_model(model, 2600)          # or preset("lenet5-ada"), or overrides from TOML/JSON
    apply_ada_tucker(model, plan)           # layers keep their class; weights become Tucker forms
    train(model, train_loader, TrainConfig(epochs=20))
    export_adt(model, "lenet5.adt", input_shape=(1, 28, 28), q=512)

Needs the ``export`` extra (torch, tensorly); the device-side runtime never imports this package.
"""
from .errors import CheckpointError, ModelError, PlanError, TrainConfigError
from .planner import (
    PRESET_INFO, PRESETS, LayerPlan, load_overrides, model_params, plan_layer, plan_model, plan_params, plan_table, preset,
)
from .tucker import (
    TuckerWeight, apply_ada_tucker, apply_scada_tucker, count_params, fake_quant_ste, freeze, shared_cores,
    tucker_layers, tucker_to_tensor,
)
from .init import reconstruction_errors
from .models import MODELS, build_model
from .train import TrainConfig, TrainResult, evaluate, train
from .onnx_graph import architecture_bytes
from .export import ExportReport, QuantPlan, dequantized_weights, export_adt, make_quant_plan
from .qat import qat_finetune

__all__ = [
    "CheckpointError", "ModelError", "PlanError", "TrainConfigError", "PRESETS", "PRESET_INFO", "preset", "load_overrides",
    "LayerPlan", "model_params", "plan_layer", "plan_table",
    "plan_model", "plan_params", "TuckerWeight", "apply_ada_tucker", "apply_scada_tucker", "count_params",
    "fake_quant_ste", "freeze", "shared_cores", "tucker_layers", "tucker_to_tensor", "reconstruction_errors",
    "MODELS", "build_model", "TrainConfig", "TrainResult", "evaluate", "train",
    "architecture_bytes", "ExportReport", "QuantPlan", "dequantized_weights", "export_adt", "make_quant_plan",
    "qat_finetune",
]
