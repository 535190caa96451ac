"""POST /clm/bars with 100,000 bars in one request, as JSON rows and as a CSV body (target < 2 s).

Run: .venv/bin/python benchmarks/bench_bars_api.py [--bars 100000] [--runs 3]

In-process through Django's full request stack (middleware, DRF parsing, validation, the
PostgreSQL upsert); the body is encoded before the clock starts. The first run of each shape
inserts, the next ones send the same bars again (a replay: nothing to rewrite), the last one
sends them with every price changed (all rows rewritten).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from _django import setup


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bars", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    setup("clm_bench_bars")
    from django.contrib.auth.models import Permission, User
    from rest_framework.test import APIClient

    from training.data.bars import bars_frame
    from training.data.synthetic import generate_bars
    from training.models import Bar

    Bar.objects.filter(symbol__startswith="BENCHPOST").delete()
    user, _ = User.objects.get_or_create(username="bench-feeder")
    user.user_permissions.add(Permission.objects.get(codename="add_bar"))
    client = APIClient()
    client.force_authenticate(user)
    bars, _ = generate_bars(args.bars, seed=3, timeframe="1m")
    frame = bars_frame(bars)
    frame["timestamp"] = frame["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    changed = frame.assign(**{c: frame[c] * 1.01 for c in ("open", "high", "low", "close")})

    def bodies(shape: str, data) -> tuple[str, bytes, str]:
        if shape == "json rows":
            batch = {"symbol": "BENCHPOSTJ", "timeframe": "1m"}
            batch["bars"] = data.to_dict(orient="records")
            return "/clm/bars", json.dumps(batch).encode(), "application/json"
        url = "/clm/bars?symbol=BENCHPOSTC&timeframe=1m"
        return url, data.to_csv(index=False).encode(), "text/csv"

    for shape in ("json rows", "csv body"):
        timings = []
        for run in range(args.runs + 1):
            url, body, content_type = bodies(shape, changed if run == args.runs else frame)
            started = time.perf_counter()
            response = client.post(url, body, content_type=content_type)
            timings.append(time.perf_counter() - started)
            assert response.status_code == 200, response.content[:500]
        print(
            f"POST /clm/bars, {args.bars:,} bars as {shape} ({len(body) / 1e6:.1f} MB): "
            f"insert {timings[0]:.2f} s, replay median {statistics.median(timings[1:-1]):.2f} s, "
            f"every price changed {timings[-1]:.2f} s ({response.json()['replaced']:,} replaced)"
        )


if __name__ == "__main__":
    main()
