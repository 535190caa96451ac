"""1,000,000 bars from PostgreSQL into numpy (target < 1 s).

Run: .venv/bin/python benchmarks/bench_data.py
"""

from __future__ import annotations

import statistics
import time

from _django import setup

N_BARS = 1_000_000


def main() -> None:
    setup("clm_bench_data")
    from training.data.bars import bars_frame, bars_import, load_bars
    from training.data.synthetic import generate_bars
    from training.models import Bar

    if Bar.objects.filter(symbol="BENCH", timeframe="1m").count() != N_BARS:
        Bar.objects.filter(symbol="BENCH").delete()
        bars, _ = generate_bars(N_BARS, seed=1, timeframe="1m")
        started = time.perf_counter()
        bars_import(frame=bars_frame(bars), symbol="BENCH", timeframe="1m")
        print(f"import of {N_BARS:,} bars (COPY + upsert): {time.perf_counter() - started:.2f} s")
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        bars = load_bars("BENCH", "1m")
        timings.append(time.perf_counter() - started)
    assert len(bars) == N_BARS
    print(
        f"load {N_BARS:,} bars into numpy: median {statistics.median(timings) * 1000:.0f} ms, "
        f"min {min(timings) * 1000:.0f} ms, max {max(timings) * 1000:.0f} ms (5 runs)"
    )


if __name__ == "__main__":
    main()
