"""LightGBM classifier of the sign of the forward return (model type "lightgbm")."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np

from training.trainers._common import TREE_PARAMS, Param, SignClassifierTrainer, defaults


class LightGBMTrainer(SignClassifierTrainer):
    """Leaf-wise booster; `deterministic` and column-wise histograms make it repeatable per seed."""

    model_type = "lightgbm"
    param_spec = {
        **TREE_PARAMS,
        "num_leaves": Param(15, 2, 4096),
        "min_child_samples": Param(50, 1, 1_000_000),
    }
    default_params = defaults(param_spec)
    libraries = ("lightgbm",)

    def __init__(self, params: dict[str, Any] | None = None, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self._booster: lgb.Booster | None = None

    def _booster_params(self) -> dict[str, Any]:
        p = self.params
        return {
            "objective": "binary",
            "metric": "binary_logloss",
            "num_leaves": p["num_leaves"],
            "max_depth": p["max_depth"],
            "learning_rate": p["learning_rate"],
            "bagging_fraction": p["subsample"],
            "bagging_freq": 1 if p["subsample"] < 1.0 else 0,
            "feature_fraction": p["colsample_bytree"],
            "min_data_in_leaf": p["min_child_samples"],
            "lambda_l2": p["reg_lambda"],
            "num_threads": p["n_jobs"],
            "seed": self.seed,
            "deterministic": True,
            "force_col_wise": True,
            "verbosity": -1,
        }

    def _train_booster(
        self, x: np.ndarray, y: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray
    ) -> int:
        rounds = self.params["early_stopping_rounds"]
        params = self._booster_params()
        train_set = lgb.Dataset(x, label=y, params=params)
        valid_sets = (
            [lgb.Dataset(x_valid, label=y_valid, reference=train_set)] if len(x_valid) else []
        )
        callbacks = [lgb.early_stopping(rounds, verbose=False)] if rounds and valid_sets else []
        booster = lgb.train(
            params,
            train_set,
            num_boost_round=self.params["n_estimators"],
            valid_sets=valid_sets,
            callbacks=callbacks,
        )
        best = booster.best_iteration if callbacks else 0
        self._booster = lgb.Booster(model_str=booster.model_to_string(num_iteration=best or None))
        return self._booster.num_trees()

    def _margin(self, x: np.ndarray) -> np.ndarray:
        return self._booster.predict(x, raw_score=True, num_threads=self.params["n_jobs"])

    def _booster_bytes(self) -> bytes:
        return self._booster.model_to_string().encode()

    def _load_booster(self, raw: bytes) -> None:
        self._booster = lgb.Booster(model_str=raw.decode())
