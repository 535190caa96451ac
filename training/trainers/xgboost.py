"""XGBoost classifier of the sign of the forward return (model type "xgboost")."""

from __future__ import annotations

from typing import Any

import numpy as np
import xgboost as xgb

from training.trainers._common import TREE_PARAMS, Param, SignClassifierTrainer, defaults


class XGBoostTrainer(SignClassifierTrainer):
    """Histogram-tree booster; deterministic for a seed (hist method, fixed thread count)."""

    model_type = "xgboost"
    param_spec = {**TREE_PARAMS, "min_child_weight": Param(5.0, 0.0, 1e6)}
    default_params = defaults(param_spec)
    libraries = ("xgboost",)

    def __init__(self, params: dict[str, Any] | None = None, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self._booster: xgb.Booster | None = None

    def _booster_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "objective": "binary:logistic",
            "eval_metric": "logloss",
            "tree_method": "hist",
            "max_depth": p["max_depth"],
            "eta": p["learning_rate"],
            "subsample": p["subsample"],
            "colsample_bytree": p["colsample_bytree"],
            "min_child_weight": p["min_child_weight"],
            "lambda": p["reg_lambda"],
            "nthread": p["n_jobs"],
            "seed": self.seed,
            "verbosity": 0,
        }

    def _train_booster(
        self, x: np.ndarray, y: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> int:
        rounds = self.params["early_stopping_rounds"]
        evals = [(xgb.DMatrix(x_valid, label=y_valid), "valid")] if len(x_valid) else []
        booster = xgb.train(
            self._booster_params(),
            xgb.DMatrix(x, label=y),
            num_boost_round=self.params["n_estimators"],
            evals=evals,
            early_stopping_rounds=rounds if rounds and evals else None,
            verbose_eval=False,
        )
        if rounds and evals:
            booster = booster[: booster.best_iteration + 1]
        self._booster = booster
        return booster.num_boosted_rounds()

    def _margin(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._booster.inplace_predict(x, predict_type="margin"), np.float64)

    def _booster_bytes(self) -> bytes:
        return bytes(self._booster.save_raw("ubj"))

    def _load_booster(self, raw: bytes) -> None:
        booster = xgb.Booster(params={"nthread": self.params["n_jobs"]})
        booster.load_model(bytearray(raw))
        self._booster = booster
