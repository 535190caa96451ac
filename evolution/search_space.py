"""Search spaces: which strategy and model parameters evolve, their types and bounds (pure).

A genome is a vector of floats, one per gene, inside the box `[xl, xu]` that pymoo's operators
work in. Each gene decodes to a parameter of its type:

- `float`: the value itself, in [low, high];
- `log_float`: exp of the coordinate, so a range such as 0.01..0.3 is searched evenly in scale;
- `int`: the coordinate rounded, each integer owning an interval of width 1 (the end points are as
  likely as the middle);
- `categorical`: the floor of a coordinate in [0, number of choices).

Decoding clamps into the bounds, so whatever an operator produces inside the box (and, defensively,
outside it) is a valid parameter set. Trainer hyperparameters are bounded further by the trainer's
own limits (`param_spec`); strategy genes (the label horizon and the feature windows) by
`STRATEGY_LIMITS`. A genome decodes to the `params` of a training job: trainer params at the top,
the feature spec under `"features"`, exactly what the pipeline reads.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np

from training.data.features import DEFAULT_FEATURE_SPEC

_EPS = 1e-9
_SIGNIFICANT = 6  # floats are rounded to this many significant digits: readable, stable params


class SearchSpaceError(ValueError):
    """A search space or an override of it is invalid; `field` names the offending entry."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class Kind(StrEnum):
    INT = "int"
    FLOAT = "float"
    LOG_FLOAT = "log_float"
    CATEGORICAL = "categorical"


@dataclass(frozen=True)
class Gene:
    name: str
    kind: Kind
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] = ()

    @property
    def box(self) -> tuple[float, float]:
        """The interval of the genome coordinate that decodes to this gene."""
        if self.kind is Kind.CATEGORICAL:
            return 0.0, len(self.choices) - _EPS
        if self.kind is Kind.INT:
            return self.low - 0.5, self.high + 0.5 - _EPS
        if self.kind is Kind.LOG_FLOAT:
            return math.log(self.low), math.log(self.high)
        return float(self.low), float(self.high)

    def decode(self, x: float) -> Any:
        lo, hi = self.box
        x = min(max(float(x), lo), hi) if math.isfinite(x) else lo
        if self.kind is Kind.CATEGORICAL:
            return self.choices[min(math.floor(x), len(self.choices) - 1)]
        if self.kind is Kind.INT:
            return int(min(max(math.floor(x + 0.5), self.low), self.high))
        value = math.exp(x) if self.kind is Kind.LOG_FLOAT else x
        value = float(f"{value:.{_SIGNIFICANT}g}")
        return min(max(value, float(self.low)), float(self.high))

    def encode(self, value: Any) -> float:
        """The coordinate of `value`, clamped into the bounds (an unknown choice: the first)."""
        lo, hi = self.box
        if self.kind is Kind.CATEGORICAL:
            index = self.choices.index(value) if value in self.choices else 0
            return index + 0.5
        value = float(value)
        if self.kind is Kind.LOG_FLOAT:
            value = math.log(max(value, self.low))
        return min(max(value, lo), hi)

    def as_dict(self) -> dict[str, Any]:
        if self.kind is Kind.CATEGORICAL:
            return {"name": self.name, "kind": str(self.kind), "choices": list(self.choices)}
        return {"name": self.name, "kind": str(self.kind), "low": self.low, "high": self.high}


# Strategy genes: label horizon and feature windows (in bars), with their hard limits.
STRATEGY_LIMITS: dict[str, tuple[int, int]] = {
    "horizon": (1, 200),
    "rsi_period": (2, 500),
    "volatility_window": (2, 1_000),
    "ma_fast": (2, 1_000),
    "ma_slow": (3, 2_000),
    "volume_zscore_window": (2, 1_000),
}

_TREE_GENES: tuple[Gene, ...] = (
    Gene("n_estimators", Kind.INT, 20, 300),
    Gene("max_depth", Kind.INT, 2, 8),
    Gene("learning_rate", Kind.LOG_FLOAT, 0.01, 0.3),
    Gene("subsample", Kind.FLOAT, 0.5, 1.0),
    Gene("colsample_bytree", Kind.FLOAT, 0.5, 1.0),
    Gene("reg_lambda", Kind.LOG_FLOAT, 0.1, 100.0),
    Gene("calibration", Kind.CATEGORICAL, choices=("none", "platt", "isotonic", "auto")),
    Gene("no_trade_band", Kind.FLOAT, 0.0, 0.15),
    Gene("position_scale", Kind.FLOAT, 0.05, 0.5),
)
_STRATEGY_GENES: tuple[Gene, ...] = (
    Gene("horizon", Kind.INT, 1, 24),
    Gene("rsi_period", Kind.INT, 5, 50),
    Gene("volatility_window", Kind.INT, 6, 96),
    Gene("ma_fast", Kind.INT, 5, 40),
    Gene("ma_slow", Kind.INT, 50, 250),
    Gene("volume_zscore_window", Kind.INT, 12, 96),
)

DEFAULT_SPACES: dict[str, tuple[Gene, ...]] = {
    "xgboost": (
        *_TREE_GENES,
        Gene("min_child_weight", Kind.LOG_FLOAT, 0.5, 50.0),
        *_STRATEGY_GENES,
    ),
    "lightgbm": (
        *_TREE_GENES,
        Gene("num_leaves", Kind.INT, 4, 64),
        Gene("min_child_samples", Kind.INT, 5, 200),
        *_STRATEGY_GENES,
    ),
}
# Held constant unless overridden: one thread per candidate, the workers give the parallelism.
DEFAULT_FIXED: dict[str, Any] = {"n_jobs": 1}


def supported_model_types() -> list[str]:
    return sorted(DEFAULT_SPACES)


def _trainer_spec(model_type: str) -> dict[str, Any]:
    from training.trainers import trainer_class

    return dict(trainer_class(model_type).param_spec)


@dataclass(frozen=True)
class SearchSpace:
    model_type: str
    genes: tuple[Gene, ...]
    fixed: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return [gene.name for gene in self.genes]

    @property
    def xl(self) -> np.ndarray:
        return np.array([gene.box[0] for gene in self.genes])

    @property
    def xu(self) -> np.ndarray:
        return np.array([gene.box[1] for gene in self.genes])

    def values(self, x: np.ndarray | list[float]) -> dict[str, Any]:
        """Each gene's decoded value, by gene name."""
        return {gene.name: gene.decode(v) for gene, v in zip(self.genes, x, strict=True)}

    def key(self, x: np.ndarray | list[float]) -> tuple[Any, ...]:
        """Two genomes with the same key train the same model: one of them is a duplicate."""
        return tuple(self.values(x).values())

    def decode(self, x: np.ndarray | list[float], *, base: Mapping[str, Any] | None = None) -> dict:
        """Training-job params for genome `x`, laid over `base` (the parent's params, if any)."""
        return params_from_values(
            {**self.fixed, **self.values(x)}, base=base, trainer_names=self._trainer_names()
        )

    def encode(self, params: Mapping[str, Any]) -> np.ndarray:
        """The genome of a job's params; genes the params do not set take their defaults."""
        current = values_from_params(params, self.model_type)
        return np.array([gene.encode(current[gene.name]) for gene in self.genes])

    def _trainer_names(self) -> set[str]:
        return set(_trainer_spec(self.model_type))

    def as_dict(self) -> dict[str, Any]:
        return {
            "model_type": self.model_type,
            "genes": [gene.as_dict() for gene in self.genes],
            "fixed": dict(self.fixed),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSpace:
        genes = tuple(
            Gene(
                name=g["name"],
                kind=Kind(g["kind"]),
                low=g.get("low"),
                high=g.get("high"),
                choices=tuple(g.get("choices") or ()),
            )
            for g in data["genes"]
        )
        return cls(model_type=data["model_type"], genes=genes, fixed=dict(data.get("fixed", {})))


def params_from_values(
    values: Mapping[str, Any], *, base: Mapping[str, Any] | None, trainer_names: set[str]
) -> dict[str, Any]:
    """Job params from gene values: trainer params on top, the windows inside `features`."""
    params = copy.deepcopy(dict(base or {}))
    features = {
        key: value
        for key, value in dict(params.pop("features", None) or {}).items()
        if key not in ("feature_names", "lookback")  # derived; the pipeline recomputes them
    }
    if "horizon" in params:  # a top-level horizon overrides the spec's in the pipeline
        features["horizon"] = params.pop("horizon")
    for name, value in values.items():
        if name in trainer_names:
            params[name] = value
        elif name == "volatility_window":
            features["volatility_windows"] = [value]
        elif name == "ma_fast":
            features["ma_windows"] = [value, values.get("ma_slow", _slow_of(features))]
        elif name == "ma_slow":
            features["ma_windows"] = [values.get("ma_fast", _fast_of(features)), value]
        elif name in STRATEGY_LIMITS:
            features[name] = value
    params["features"] = features
    return params


def _fast_of(features: Mapping[str, Any]) -> int:
    windows = features.get("ma_windows") or DEFAULT_FEATURE_SPEC["ma_windows"]
    return int(min(windows))


def _slow_of(features: Mapping[str, Any]) -> int:
    windows = features.get("ma_windows") or DEFAULT_FEATURE_SPEC["ma_windows"]
    return int(max(windows))


def values_from_params(params: Mapping[str, Any], model_type: str) -> dict[str, Any]:
    """Every gene's current value in job params, defaults filling what they leave out."""
    spec = _trainer_spec(model_type)
    values: dict[str, Any] = {name: p.default for name, p in spec.items()}
    values.update({k: v for k, v in params.items() if k in spec})
    features = {**DEFAULT_FEATURE_SPEC, **dict(params.get("features") or {})}
    if params.get("horizon") is not None:
        features["horizon"] = params["horizon"]
    vol = features.get("volatility_windows") or DEFAULT_FEATURE_SPEC["volatility_windows"]
    values.update(
        horizon=features["horizon"],
        rsi_period=features.get("rsi_period") or DEFAULT_FEATURE_SPEC["rsi_period"],
        volatility_window=int(min(vol)),
        ma_fast=_fast_of(features),
        ma_slow=_slow_of(features),
        volume_zscore_window=features.get("volume_zscore_window")
        or DEFAULT_FEATURE_SPEC["volume_zscore_window"],
    )
    return values


# ---------------------------------------------------------------------------------------------
# Validation of user overrides


def resolve_search_space(
    model_type: str, overrides: Mapping[str, Any] | None = None
) -> SearchSpace:
    """The default space of `model_type` with `overrides` applied, checked gene by gene.

    An override is, per parameter name:
    - `{"low": a, "high": b}` to narrow or move a range (optionally `"kind"` to change the scale,
      e.g. make a trainer parameter that is not searched by default a `log_float` gene);
    - `{"choices": [...]}` for a categorical gene;
    - a plain value to hold the parameter constant (it leaves the search).
    Bounds must lie inside the trainer's own limits (or `STRATEGY_LIMITS`); `low == high` also
    holds a parameter constant.
    """
    if model_type not in DEFAULT_SPACES:
        raise SearchSpaceError(
            f"evolution supports model types {', '.join(supported_model_types())}, "
            f"not {model_type!r}",
            field="model_type",
        )
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, Mapping):
        raise SearchSpaceError(
            "search_space must be an object of parameter overrides", field="search_space"
        )
    trainer_spec = _trainer_spec(model_type)
    genes = {gene.name: gene for gene in DEFAULT_SPACES[model_type]}
    fixed = dict(DEFAULT_FIXED)
    for name, override in overrides.items():
        where = f"search_space.{name}"
        if name not in trainer_spec and name not in STRATEGY_LIMITS:
            known = sorted({*trainer_spec, *STRATEGY_LIMITS})
            raise SearchSpaceError(
                f"unknown parameter {name!r} for {model_type}; known: {', '.join(known)}",
                field=where,
            )
        if isinstance(override, Mapping):
            gene = _gene_override(name, genes.get(name), override, trainer_spec, where)
            genes.pop(name, None)
            fixed.pop(name, None)
            if isinstance(gene, Gene):
                genes[name] = gene
            else:
                fixed[name] = gene
        else:
            genes.pop(name, None)
            fixed[name] = _check_value(name, override, trainer_spec, where)
    _check_moving_averages(genes, fixed)
    if not genes:
        raise SearchSpaceError(
            "the overrides leave nothing to search: every parameter is fixed", field="search_space"
        )
    defaults = [g.name for g in DEFAULT_SPACES[model_type]]
    ordered = [genes[name] for name in defaults if name in genes]
    ordered += [gene for name, gene in genes.items() if name not in defaults]
    return SearchSpace(model_type=model_type, genes=tuple(ordered), fixed=fixed)


def _limits(name: str, trainer_spec: Mapping[str, Any]) -> tuple[Any, Any, tuple, type]:
    """(low, high, choices, type) a parameter may take at all."""
    if name in STRATEGY_LIMITS:
        low, high = STRATEGY_LIMITS[name]
        return low, high, (), int
    param = trainer_spec[name]
    return param.low, param.high, tuple(param.choices), type(param.default)


def _check_value(name: str, value: Any, trainer_spec: Mapping[str, Any], where: str) -> Any:
    low, high, choices, kind = _limits(name, trainer_spec)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if type(value) is not kind:
        wanted = {int: "an integer", float: "a number", str: "a string"}.get(kind, kind.__name__)
        raise SearchSpaceError(f"{name} must be {wanted}, got {value!r}", field=where)
    if isinstance(value, float) and not math.isfinite(value):
        raise SearchSpaceError(f"{name} must be finite, got {value!r}", field=where)
    if choices and value not in choices:
        raise SearchSpaceError(f"{name} must be one of {list(choices)}, got {value!r}", field=where)
    if low is not None and value < low:
        raise SearchSpaceError(f"{name} must be >= {low}, got {value!r}", field=where)
    if high is not None and value > high:
        raise SearchSpaceError(f"{name} must be <= {high}, got {value!r}", field=where)
    return value


def _gene_override(
    name: str,
    current: Gene | None,
    override: Mapping[str, Any],
    trainer_spec: Mapping[str, Any],
    where: str,
) -> Gene | Any:
    """A gene from an override, or the constant it reduces to (one choice, or low == high)."""
    unknown = set(override) - {"low", "high", "choices", "kind"}
    if unknown:
        raise SearchSpaceError(
            f"unknown keys {sorted(unknown)} in the override of {name}; use low, high, choices "
            "or kind",
            field=where,
        )
    low_limit, high_limit, allowed, value_type = _limits(name, trainer_spec)
    default_kind = (
        current.kind
        if current is not None
        else Kind.CATEGORICAL
        if value_type is str
        else Kind.INT
        if value_type is int
        else Kind.FLOAT
    )
    try:
        kind = Kind(override.get("kind", default_kind))
    except ValueError:
        raise SearchSpaceError(
            f"kind of {name} must be one of {', '.join(Kind)}, got {override.get('kind')!r}",
            field=where,
        ) from None
    if value_type is str and kind is not Kind.CATEGORICAL:
        raise SearchSpaceError(f"{name} takes names: it can only be categorical", field=where)
    if kind is Kind.CATEGORICAL:
        if "low" in override or "high" in override:
            raise SearchSpaceError(
                f"{name} is categorical: give choices, not low and high", field=where
            )
        choices = override.get("choices", current.choices if current else allowed)
        if not isinstance(choices, list | tuple) or not choices:
            raise SearchSpaceError(f"choices of {name} must be a non-empty list", field=where)
        checked = [_check_value(name, c, trainer_spec, where) for c in choices]
        if len(set(checked)) != len(checked):
            raise SearchSpaceError(f"choices of {name} has duplicates", field=where)
        if len(checked) == 1:
            return checked[0]
        return Gene(name, kind, choices=tuple(checked))
    if "choices" in override:
        raise SearchSpaceError(
            f"{name} is a {kind} gene: give low and high, not choices", field=where
        )
    if kind is Kind.INT and value_type is not int:
        raise SearchSpaceError(f"{name} is a float: it cannot be an int gene", field=where)
    if kind in (Kind.FLOAT, Kind.LOG_FLOAT) and value_type is int:
        raise SearchSpaceError(f"{name} is an integer: use kind int", field=where)
    low = override.get("low", current.low if current and current.kind is not Kind.CATEGORICAL
                       else low_limit)  # fmt: skip
    high = override.get("high", current.high if current and current.kind is not Kind.CATEGORICAL
                        else high_limit)  # fmt: skip
    if low is None or high is None:
        raise SearchSpaceError(f"{name} needs both low and high", field=where)
    low = _check_value(name, low, trainer_spec, f"{where}.low")
    high = _check_value(name, high, trainer_spec, f"{where}.high")
    if low > high:
        raise SearchSpaceError(f"{name}: low {low!r} is above high {high!r}", field=where)
    if kind is Kind.LOG_FLOAT and low <= 0:
        raise SearchSpaceError(f"{name}: a log_float gene needs low > 0, got {low!r}", field=where)
    if low == high:
        return low
    return Gene(name, kind, low, high)


def _check_moving_averages(genes: Mapping[str, Gene], fixed: Mapping[str, Any]) -> None:
    """The two moving averages must differ (a feature spec refuses duplicate windows)."""
    fast = genes["ma_fast"].high if "ma_fast" in genes else fixed.get("ma_fast")
    slow = genes["ma_slow"].low if "ma_slow" in genes else fixed.get("ma_slow")
    if fast is not None and slow is not None and fast >= slow:
        raise SearchSpaceError(
            f"ma_fast must stay below ma_slow (ma_fast up to {fast}, ma_slow from {slow}), so "
            "the two moving averages always differ",
            field="search_space.ma_fast",
        )


def check_space_trains(space: SearchSpace) -> None:
    """Refuse a space whose parameter sets the trainer would reject (e.g. calibration without a
    validation tail), trying its lower corner, centre and upper corner."""
    from training.trainers import TrainerError, trainer_class

    trainer_cls = trainer_class(space.model_type)
    for x in (space.xl, (space.xl + space.xu) / 2, space.xu):
        params = space.decode(x)
        params.pop("features")
        try:
            trainer_cls(params)
        except TrainerError as exc:
            raise SearchSpaceError(
                f"the search space gives parameters the trainer refuses: {exc}",
                field="search_space",
            ) from exc
