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

TRAINABLE_TYPES: tuple[str, ...] = tuple(_REGISTRY)

# Small budgets: every family trains in seconds on 2 cores (the demo, quick experiments). The
# trainers' own defaults are what a scheduled job uses.
DEMO_PARAMS: dict[str, dict] = {
    "xgboost": {},
    "lightgbm": {},
    "nhits": {"max_steps": 60},
    "patchtst": {"max_steps": 40, "input_size": 128},
    "rl_v2": {"total_timesteps": 12_000},
    "rl_v3": {"total_timesteps": 12_000},
}


def _extra_trainers() -> dict[str, str]:
    """settings.CLM_EXTRA_TRAINERS ("model_type=package.module:Class" items): trainers plugged in
    for more model types, such as the tests' own; the six families cannot be replaced."""
    from django.conf import settings

    extra = {}
    for item in getattr(settings, "CLM_EXTRA_TRAINERS", []):
        model_type, _, path = item.partition("=")
        if model_type.strip() and model_type.strip() not in _REGISTRY and ":" in path:
            extra[model_type.strip()] = path.strip()
    return extra


def trainer_class(model_type: str) -> type[Trainer]:
    path = _REGISTRY.get(model_type) or _extra_trainers().get(model_type)
    if path is None:
        raise TrainerError(f"no trainer for model type {model_type!r}")
    module_name, class_name = path.split(":")
    return getattr(import_module(module_name), class_name)


__all__ = ["DEMO_PARAMS", "TRAINABLE_TYPES", "Trainer", "TrainerError", "trainer_class"]
