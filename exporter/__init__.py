"""ADT's PyTorch side: plan, apply ADA-Tucker / SCADA-Tucker, train, then export a .adt file.

    from adt.exporter import build_model, plan_model, apply_ada_tucker, train, TrainConfig, export_adt
    model = build_model("lenet5")
    plan = plan_model(model, 2600)          # or preset("lenet5-ada"), or overrides from TOML/JSON
    apply_ada_tucker(model, plan)           # layers keep their class; weights become Tucker forms
    train(model, train_loader, TrainConfig(epochs=20))
    export_adt(model, "lenet5.adt", input_shape=(1, 28, 28), q=512)

The modules, in import order (each imports only those before it, and the runtime):
``errors``, ``planner`` (reshapes and cores), ``models`` (the built-in registry), ``user_model``
(``--model`` specs, saved models lifted to nn modules, safe checkpoint loading), ``fakequant``
(Eq. 13 with a straight-through gradient), ``decompose`` (HOOI / CP / SCADA ALS in NumPy),
``factorize`` (the Tucker parametrization, apply ADA/SCADA/CP, init), ``admm`` (ADMM training toward Tucker or TT ranks), ``mtd`` (Mixed Tensor
Decomposition: Tucker or CP per layer), ``tensor_train`` (TT parametrization and planner; stored as
format 2.0 TT parameters), ``methods`` (the seven methods behind ``--method``: plan, size, apply),
``data`` (MNIST loaders),
``distributed`` (device, mixed precision, DDP under torchrun), ``fit`` (the one training loop, accuracy), ``batchnorm`` (BatchNorm stored as scale and shift),
``quantplan`` (inventory, groups, Q and b),
``rate`` (the differentiable estimate of a model's payload bits, for rate-aware QAT), ``qat``
(quantization-aware fine-tuning), ``onnx_graph`` (the weightless architecture),
``export`` (the file and its report), ``datasets`` (the user's data: IDX, .npz, image folders,
module:factory, with the input convention the file records), ``size_budget`` (plan and fit to a
file-size budget).

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
from . import distributed
from .distributed import AMP_MODES, is_main
from .fit import SCHEDULES, EpochStats, TrainConfig, TrainResult, evaluate, train
from .models import MODELS, BuiltinModel, build_model
from .user_model import CheckpointLoad, UserModel, load_checkpoint, parse_model_args, resolve_model
from .onnx_graph import architecture_bytes
from .planner import (
    DEFAULT_RATIOS, PRESET_INFO, PRESETS, LayerPlan, default_target, load_overrides, model_params, plan_layer,
    plan_model, plan_params, plan_table, preset,
)
from .admm import AdmmDecomposed, AdmmResult, admm_then_tt, admm_then_tucker, admm_train
from .mtd import MTD_PROXIES, MtdLayer, MtdReport, apply_mtd, plan_mtd
from .methods import METHOD_NAMES, Method, get_method
from .tensor_train import (
    TT_INITS, TTPlan, TTWeight, apply_tt, plan_model_tt, plan_tt, tt_layers, tt_model_params, tt_plan_table,
)
from .qat import QAT_SCHEDULES, QatResult, qat_finetune
from .rate import RateEstimate, soft_entropy_bits
from .quantplan import DEFAULT_Q, GROUPINGS, KINDS, GroupSpec, QuantPlan, choose_b, make_quant_plan
from .datasets import Dataset, load_dataset
from .size_budget import SizeBudgetError, SizeEstimate, SizeFit, fit_to_size, parse_size, plan_for_size

__all__ = [
    "AdtError", "PlanError", "ModelError", "CheckpointError", "TrainConfigError", "ExportCheckError",
    "PRESETS", "PRESET_INFO", "preset", "load_overrides", "LayerPlan", "model_params", "plan_layer", "plan_model",
    "plan_params", "plan_table",
    "MODELS", "BuiltinModel", "build_model",
    "resolve_model", "parse_model_args", "load_checkpoint", "UserModel", "CheckpointLoad",
    "default_target", "DEFAULT_RATIOS",
    "TuckerWeight", "apply_ada_tucker", "apply_scada_tucker", "tucker_layers", "shared_cores", "count_params",
    "freeze", "reconstruction_errors", "METHODS", "INITS",
    "QuantSpec", "fake_quant_ste",
    "TrainConfig", "TrainResult", "EpochStats", "train", "evaluate", "SCHEDULES",
    "distributed", "is_main", "AMP_MODES",
    "admm_train", "admm_then_tucker", "admm_then_tt", "AdmmResult", "AdmmDecomposed",
    "plan_mtd", "apply_mtd", "MtdReport", "MtdLayer", "MTD_PROXIES",
    "METHOD_NAMES", "Method", "get_method",
    "TTPlan", "TTWeight", "TT_INITS", "plan_tt", "plan_model_tt", "apply_tt", "tt_layers", "tt_model_params",
    "tt_plan_table",
    "qat_finetune", "QatResult", "QAT_SCHEDULES", "RateEstimate", "soft_entropy_bits",
    "QuantPlan", "GroupSpec", "make_quant_plan", "choose_b", "GROUPINGS", "KINDS", "DEFAULT_Q",
    "export_adt", "ExportOptions", "ExportReport", "ExportCheck", "dequantized_weights",
    "mnist_loaders", "mnist_test_set", "tensor_loader",
    "architecture_bytes",
    "Dataset", "load_dataset",
    "SizeBudgetError", "SizeEstimate", "SizeFit", "parse_size", "plan_for_size", "fit_to_size",
]
