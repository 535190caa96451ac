"""Reinforcement-learning traders: a gymnasium trading environment and two stable-baselines3 agents.

`TradingEnv` replays the training window: the observation is the normalized feature row plus the
position held, the action is flat / long / short, and the reward is the strategy return of
METRICS.md for that bar (position times the next bar's simple return, minus the fee on the position
change), divided by the training window's return volatility so rewards are O(1) for the networks.
Episodes start at seeded random offsets and last `episode_length` bars; they never leave the rows
whose next bar is inside the training window.

- rl_v3 (`RLv3Trainer`): PPO, the robust on-policy default.
- rl_v2 (`RLv2Trainer`): DQN. A value-based, off-policy learner replays each transition of the fixed
  historical window many times (it is sample-efficient where the data, not the simulator, is the
  limit), and its greedy argmax policy is deterministic by construction. A2C would mostly repeat
  PPO (same on-policy actor-critic family, less stable), so DQN gives the line a genuinely different
  second opinion.

Positions for an evaluation window are computed exactly but batched: the policy is evaluated on
every row once for each of the three positions it could be holding, then a cheap scan follows the
path actually taken from flat. stable-baselines3 and torch are imported inside the methods.
"""

from __future__ import annotations

import io
import json
import time
import zipfile
from abc import abstractmethod
from typing import Any

import gymnasium as gym
import numpy as np

from training.data.dataset import Dataset
from training.trainers._common import (
    SIZING_PARAMS,
    BaseTrainer,
    Param,
    defaults,
    deterministic_zip,
    finite_rows,
    torch_threads,
)

POSITIONS = (0.0, 1.0, -1.0)  # by action: flat, long, short
_OBS_CLIP = 10.0
_MAX_REPLAY = 1_000_000  # transitions; the whole default run fits, a huge one stays bounded
_UNREPRODUCIBLE = ("start_time", "ep_info_buffer", "ep_success_buffer")


class TradingEnv(gym.Env):
    """One instrument, one decision per bar; see the module docstring for the reward."""

    metadata = {"render_modes": []}

    def __init__(
        self,
        features: np.ndarray,
        returns: np.ndarray,
        *,
        fee: float,
        episode_length: int,
        reward_scale: float = 1.0,
    ) -> None:
        features = np.asarray(features, dtype=np.float32)
        returns = np.asarray(returns, dtype=np.float64)
        if features.ndim != 2 or len(features) != len(returns) or len(returns) == 0:
            raise ValueError("features must be a (rows, n_features) array with one return per row")
        if not (np.isfinite(features).all() and np.isfinite(returns).all()):
            raise ValueError("features and returns must be finite")
        if not 1 <= episode_length <= len(returns):
            raise ValueError(f"episode_length must be in 1..{len(returns)}, got {episode_length}")
        self._features = np.clip(features, -_OBS_CLIP, _OBS_CLIP)
        self._returns = returns
        self._fee = float(fee)
        self._length = int(episode_length)
        self._reward_scale = float(reward_scale)
        self.observation_space = gym.spaces.Box(
            -_OBS_CLIP, _OBS_CLIP, shape=(features.shape[1] + 1,), dtype=np.float32
        )
        self.action_space = gym.spaces.Discrete(len(POSITIONS))
        self._start = 0
        self._t = 0
        self._position = 0.0

    def _observation(self) -> np.ndarray:
        row = self._features[min(self._t, len(self._features) - 1)]
        return np.append(row, np.float32(self._position)).astype(np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._start = int(self.np_random.integers(0, len(self._returns) - self._length + 1))
        self._t = self._start
        self._position = 0.0
        return self._observation(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        position = POSITIONS[int(action)]
        reward = position * self._returns[self._t] - self._fee * abs(position - self._position)
        self._position = position
        self._t += 1
        truncated = self._t - self._start >= self._length
        return (
            self._observation(),
            float(reward * self._reward_scale),
            False,
            truncated,
            {"position": position},
        )


COMMON_PARAMS: dict[str, Param] = {
    "total_timesteps": Param(100_000, 64, 100_000_000),
    "episode_length": Param(256, 8, 1_000_000),
    "fee": Param(0.0005, 0.0, 0.1),
    "learning_rate": Param(3e-4, 1e-7, 1.0),
    "gamma": Param(0.9, 0.0, 0.9999),
    "batch_size": Param(128, 8, 65_536),
    "net_width": Param(64, 4, 4096),
    "device": Param("auto", choices=("auto", "cpu", "cuda")),
    "torch_threads": Param(1, 1, 256),
    **SIZING_PARAMS,
}


class _SB3Trainer(BaseTrainer):
    """Shared env set-up, normalization, batched positions and artifact for the SB3 agents."""

    libraries = ("stable_baselines3", "torch", "gymnasium")

    def __init__(self, params: dict[str, Any] | None = None, *, seed: int = 0) -> None:
        super().__init__(params, seed=seed)
        self._model: Any = None
        self._mean: np.ndarray | None = None
        self._std: np.ndarray | None = None

    @abstractmethod
    def _algorithm(self) -> type:
        """The stable-baselines3 algorithm class (imported lazily)."""

    @abstractmethod
    def _algorithm_kwargs(self) -> dict[str, Any]:
        """Algorithm-specific hyper-parameters, from the params."""

    def _normalized(self, features: np.ndarray) -> np.ndarray:
        return np.clip((features - self._mean) / self._std, -_OBS_CLIP, _OBS_CLIP).astype(
            np.float32
        )

    def fit(self, data: Dataset, train: slice, validation: slice | None = None) -> dict[str, float]:
        # A fixed training budget: no choice is made on the validation window.
        with torch_threads(self.params["torch_threads"]):
            return self._fit(data, train)

    def _fit(self, data: Dataset, train: slice) -> dict[str, float]:
        started = time.perf_counter()
        p = self.params
        rows = self._fit_rows(data, train, min_rows=32)
        x = data.features[rows]
        self._mean = x.mean(axis=0)
        self._std = np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
        close = data.bars.close
        returns = close[rows + 1] / close[rows] - 1.0
        scale = float(np.std(returns))
        env = TradingEnv(
            self._normalized(x),
            returns,
            fee=p["fee"],
            episode_length=min(p["episode_length"], len(rows)),
            reward_scale=1.0 / scale if scale > 0 else 1.0,
        )
        self._model = self._algorithm()(
            "MlpPolicy",
            env,
            learning_rate=p["learning_rate"],
            gamma=p["gamma"],
            batch_size=p["batch_size"],
            policy_kwargs={"net_arch": [p["net_width"], p["net_width"]]},
            seed=self.seed,
            device=p["device"],
            verbose=0,
            **self._algorithm_kwargs(),
        )
        self._model.learn(total_timesteps=p["total_timesteps"])
        held = self._walk(self._normalized(x), np.ones(len(rows), dtype=bool))
        previous = np.concatenate([[0.0], held[:-1]])
        strategy = held * returns - p["fee"] * np.abs(held - previous)
        return {
            "n_train_rows": float(len(rows)),
            "total_timesteps": float(p["total_timesteps"]),
            "train_mean_return": float(np.mean(strategy)),
            "train_exposure": float(np.mean(held != 0)),
            "fit_seconds": time.perf_counter() - started,
        }

    def _walk(self, x: np.ndarray, ok: np.ndarray) -> np.ndarray:
        """Greedy positions along the rows, starting flat; rows not ok are flat.

        The policy is evaluated in three batches, one per position it could be holding (that is
        the only part of the observation the path changes), then the path is followed in a scan.
        """
        n = len(x)
        choice = np.zeros((len(POSITIONS), n), dtype=np.int64)
        if ok.any():
            for held, position in enumerate(POSITIONS):
                obs = np.column_stack([x[ok], np.full(int(ok.sum()), position, np.float32)])
                choice[held, ok] = self._model.predict(obs, deterministic=True)[0]
        path = np.zeros(n)
        held = 0
        for t in range(n):
            held = int(choice[held, t]) if ok[t] else 0
            path[t] = POSITIONS[held]
        return path

    def _positions(self, data: Dataset, window: slice) -> np.ndarray:
        rows = self._window_rows(data, window)
        x = data.features[rows.start : rows.stop]
        ok = finite_rows(x)
        with torch_threads(self.params["torch_threads"]):
            return self._walk(self._normalized(np.where(ok[:, None], x, 0.0)), ok)

    def _state(self) -> dict[str, Any]:
        return {"mean": self._mean.tolist(), "std": self._std.tolist()}

    def _files(self) -> dict[str, bytes]:
        buffer = io.BytesIO()
        # When the fit started and the recent episodes' wall-clock times: not needed to act, and
        # different on every run, so a retrain would never reproduce the artifact's bytes.
        self._model.save(buffer, exclude=list(_UNREPRODUCIBLE))
        with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as saved:
            entries = {name: saved.read(name) for name in saved.namelist()}
        entries["data"] = _reproducible_data(entries["data"])
        return {"sb3.zip": deterministic_zip(entries)}

    def _restore(self, state: dict[str, Any], files: dict[str, bytes]) -> None:
        self._mean = np.asarray(state["mean"], dtype=np.float64)
        self._std = np.asarray(state["std"], dtype=np.float64)
        self._model = self._algorithm().load(
            io.BytesIO(files["sb3.zip"]), device=self.params["device"]
        )


def _reproducible_data(data: bytes) -> bytes:
    """stable-baselines3's `data` entry without the parts that differ between processes.

    Next to each pickled object (":serialized:", all that loading reads) it writes the object's
    attributes as text for a human reader; those include memory addresses ("<function ... at
    0x7f...>"), so they are dropped.
    """
    items = json.loads(data)
    for key, item in items.items():
        if isinstance(item, dict) and ":serialized:" in item:
            items[key] = {k: item[k] for k in (":type:", ":serialized:") if k in item}
    return json.dumps(items, indent=4, sort_keys=True).encode()


class RLv3Trainer(_SB3Trainer):
    """PPO with a small MLP; entropy bonus keeps it from collapsing onto one action early."""

    model_type = "rl_v3"
    param_spec = {
        **COMMON_PARAMS,
        "n_steps": Param(1024, 8, 1_000_000),
        "n_epochs": Param(5, 1, 100),
        "ent_coef": Param(0.01, 0.0, 1.0),
    }
    default_params = defaults(param_spec)

    def _algorithm(self) -> type:
        from stable_baselines3 import PPO

        return PPO

    def _algorithm_kwargs(self) -> dict[str, Any]:
        p = self.params
        return {"n_steps": p["n_steps"], "n_epochs": p["n_epochs"], "ent_coef": p["ent_coef"]}


class RLv2Trainer(_SB3Trainer):
    """DQN with experience replay over the whole training window and a decaying epsilon."""

    model_type = "rl_v2"
    param_spec = {
        **COMMON_PARAMS,
        "learning_rate": Param(5e-4, 1e-7, 1.0),
        "learning_starts": Param(1_000, 0, 100_000_000),
        "train_freq": Param(4, 1, 10_000),
        "target_update_interval": Param(1_000, 1, 100_000_000),
        "exploration_fraction": Param(0.3, 0.0, 1.0),
        "exploration_final_eps": Param(0.05, 0.0, 1.0),
    }
    default_params = defaults(param_spec)

    def _algorithm(self) -> type:
        from stable_baselines3 import DQN

        return DQN

    def _algorithm_kwargs(self) -> dict[str, Any]:
        p = self.params
        return {
            "buffer_size": min(p["total_timesteps"], _MAX_REPLAY),
            "learning_starts": p["learning_starts"],
            "train_freq": p["train_freq"],
            "target_update_interval": p["target_update_interval"],
            "exploration_fraction": p["exploration_fraction"],
            "exploration_final_eps": p["exploration_final_eps"],
        }
