"""Model families behind one interface. Heavy libraries load only when their trainer is needed."""

from __future__ import annotations

from importlib import import_module

from training.trainers.base import Trainer, TrainerError

_REGISTRY: dict[str, str] = {
    "xgboost": "training.trainers.xgboost:XGBoostTrainer",
    "lightgbm": "training.trainers.lightgbm:LightGBMTrainer",
    "nhits": "training.trainers.neuralforecast:NHITSTrainer",
    "patchtst": "training.trainers.neuralforecast:PatchTSTTrainer",
    "rl_v2": "training.trainers.rl:RLv2Trainer",
    "rl_v3": "training.trainers.rl:RLv3Trainer",
}


def trainer_class(model_type: str) -> type[Trainer]:
    try:
        module_name, class_name = _REGISTRY[model_type].split(":")
    except KeyError:
        raise TrainerError(f"no trainer for model type {model_type!r}") from None
    return getattr(import_module(module_name), class_name)


__all__ = ["Trainer", "TrainerError", "trainer_class"]
