"""Evaluation of frozen or fine-tuned backbones: weighted kNN, linear probe, semi-supervised
fine-tuning, transfer probes, and export to plain torchvision/safetensors weights.

The numeric pieces (:func:`knn_accuracy`, :func:`linear_probe`, :func:`fit_logistic`,
:func:`finetune`) work on plain tensors; the ``run_*`` functions go from a model source to a result
recorded in the run directory; :func:`load_pretrained` reads any model source (run, checkpoint,
torchvision, timm, random init).
"""

from mmcr.evaluate.api import run_export, run_knn, run_linear, run_semi, run_transfer
from mmcr.evaluate.export import backbone_state_dict, build_plain_model, export_backbone, load_exported, read_exported
from mmcr.evaluate.features import dataset_features, eval_transform_for, extract_features
from mmcr.evaluate.knn import knn_accuracy, knn_scores, topk_accuracy
from mmcr.evaluate.linear import DEFAULT_WEIGHT_DECAYS, LogisticModel, fit_logistic, linear_probe, sklearn_C
from mmcr.evaluate.results import record_result
from mmcr.evaluate.semi import FinetuneAugment, class_balanced_subset, finetune, read_subset_file
from mmcr.evaluate.sources import SOURCE_HELP, ModelSource, load_pretrained
from mmcr.evaluate.transfer import TRANSFER_DATASETS, transfer_dataset, transfer_probe

__all__ = [
    "DEFAULT_WEIGHT_DECAYS",
    "SOURCE_HELP",
    "ModelSource",
    "TRANSFER_DATASETS",
    "FinetuneAugment",
    "LogisticModel",
    "backbone_state_dict",
    "build_plain_model",
    "class_balanced_subset",
    "dataset_features",
    "eval_transform_for",
    "export_backbone",
    "extract_features",
    "finetune",
    "fit_logistic",
    "knn_accuracy",
    "knn_scores",
    "linear_probe",
    "load_pretrained",
    "load_exported",
    "read_exported",
    "read_subset_file",
    "record_result",
    "run_export",
    "run_knn",
    "run_linear",
    "run_semi",
    "run_transfer",
    "sklearn_C",
    "topk_accuracy",
    "transfer_dataset",
    "transfer_probe",
]
