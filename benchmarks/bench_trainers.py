"""Training wall time, inference time and peak RSS per model family, at demo and default budgets.

Each (family, budget) runs in a fresh process so its peak RSS is its own. Data: 20,000 synthetic 1h
bars (seed 1), the default features and walk-forward split (about 15,000 training rows); inference
is `positions` over 10,000 bars.

Run: .venv/bin/python benchmarks/bench_trainers.py [--families xgboost,nhits] [--budgets demo]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("xgboost", "lightgbm", "nhits", "patchtst", "rl_v2", "rl_v3")

CHILD = r"""
import json, resource, sys, time
sys.path.insert(0, sys.argv[1])
from training.data.features import build_dataset
from training.data.split import walk_forward
from training.data.synthetic import generate_bars
from training.trainers import trainer_class
from training.trainers import DEMO_PARAMS
family, budget = sys.argv[2], sys.argv[3]
bars, _ = generate_bars(20_000, seed=1)
data = build_dataset(bars)
split = walk_forward(len(data), horizon=data.horizon, warmup=data.spec["lookback"])
params = DEMO_PARAMS[family] if budget == "demo" else {}
trainer = trainer_class(family)(params, seed=0)
started = time.perf_counter()
trainer.fit(data, split.train, split.validation)
fit = time.perf_counter() - started
window = slice(len(data) - 10_000, len(data))
trainer.positions(data, slice(window.start, window.start + 500))  # warm-up of lazy setup
started = time.perf_counter()
trainer.positions(data, window)
predict = time.perf_counter() - started
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"fit": fit, "predict": predict, "rss": rss, "train_rows": split.train.stop}))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--budgets", default="demo,default")
    args = parser.parse_args()
    print(f"{'family':<10}{'budget':<9}{'fit s':>9}{'10k bars s':>12}{'peak RSS MiB':>14}")
    for family in args.families.split(","):
        for budget in args.budgets.split(","):
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(ROOT), family, budget],
                capture_output=True, text=True, check=False, cwd="/tmp",
            )  # fmt: skip
            if out.returncode != 0:
                print(f"{family:<10}{budget:<9} failed: {out.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{family:<10}{budget:<9}{r['fit']:>9.2f}{r['predict']:>12.3f}{r['rss']:>14.0f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
