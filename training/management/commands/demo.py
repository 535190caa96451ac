"""CLM's main job, end to end on the embedded default: data, training, gates, a regime change."""

from __future__ import annotations

import os

from django.conf import settings
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser

from registry.models import ModelVersion, RegisteredModel, TrainingJob
from registry.selectors import with_latest_evaluation
from training.management.runner import run_job_with_progress
from training.models import TriggerSource
from training.retraining import triggers
from training.retraining.triggers import Origin, TriggerResult
from training.trainers import DEMO_PARAMS

DEMO_SYMBOLS = ("BTCUSDT", "ETHUSDT")
FAMILIES = ("xgboost", "lightgbm", "nhits", "patchtst", "rl_v2", "rl_v3")
DEMO_USER = ("admin", "clm-demo-admin")


class Command(BaseCommand):
    help = "The demo: generate markets, train, evaluate, promote, stage a regime change, retrain."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bars", type=int, default=20_000)
        parser.add_argument("--regime-bars", type=int, default=4_000)
        parser.add_argument("--seed", type=int, default=7)
        parser.add_argument(
            "--families",
            default=",".join(FAMILIES),
            help="Comma-separated model types to train (default: all six).",
        )

    def handle(self, *args, **options) -> None:
        if not settings.DEBUG and os.environ.get("DJANGO_SETTINGS_MODULE", "").endswith(
            "production"
        ):
            raise CommandError("the demo creates a demo admin user: not under production settings")
        families = [f.strip() for f in options["families"].split(",") if f.strip()]
        unknown = sorted(set(families) - set(FAMILIES))
        if unknown:
            raise CommandError(f"unknown families {unknown}; choose from {', '.join(FAMILIES)}")
        self._section("1/6 database and demo user")
        call_command("migrate", verbosity=0)
        user, _ = User.objects.get_or_create(
            username=DEMO_USER[0], defaults={"is_staff": True, "is_superuser": True}
        )
        user.set_password(DEMO_USER[1])
        user.save()
        self.stdout.write(f"database: {settings.DATABASES['default']['NAME']}")

        self._section("2/6 synthetic markets (seeded; trending, mean-reverting, volatile, quiet)")
        call_command(
            "generate_market_data",
            f"--symbol={','.join(DEMO_SYMBOLS)}",
            timeframe="1h",
            bars=options["bars"],
            seed=options["seed"],
            stdout=self.stdout,
        )

        self._failed: list[str] = []
        self._section("3/6 train, evaluate out of sample, apply the gates")
        origin = Origin(source=TriggerSource.INTERNAL, requested_by="demo")
        for symbol in DEMO_SYMBOLS:
            for family in families:
                result = triggers.trigger_training(
                    model_type=family, symbol=symbol, timeframe="1h", params=DEMO_PARAMS[family],
                    origin=origin, dispatch=False,
                )  # fmt: skip
                self._run(result, f"{family:>8} {symbol}")
        self._table()

        self._section("4/6 stage a regime change: new volatile bars arrive")
        regime_bars = options["regime_bars"]
        call_command(
            "generate_market_data",
            f"--symbol={','.join(DEMO_SYMBOLS)}",
            timeframe="1h",
            bars=regime_bars,
            seed=options["seed"] + 1,
            regimes=f"volatile:{regime_bars // 2},trending:{regime_bars - regime_bars // 2}",
            append=True,
            stdout=self.stdout,
        )

        self._section("5/6 retrain on the regime change (through the regime-change trigger)")
        # The demo compresses weeks into a minute: its retrain policies wait 0 h between jobs, so
        # the regime change is not skipped for the cooldown (6 h by default). Restored after.
        cooldowns = {f: triggers.retrain_policy_for(f).cooldown_hours for f in families}
        self.stdout.write("demo retrain policies: cooldown 0 h (default 6 h), restored after")
        for family in families:
            triggers.retrain_policy_update(model_type=family, cooldown_hours=0.0)
        try:
            for symbol in DEMO_SYMBOLS:
                results = triggers.handle_regime_change(
                    "volatile",
                    [RegisteredModel.make_model_id(f, symbol, "1h") for f in families],
                    origin=Origin(source=TriggerSource.INTERNAL, requested_by="demo"),
                    dispatch=False,
                )
                for family, result in zip(families, results, strict=True):
                    self._run(result, f"{family:>8} {symbol}")
        finally:
            for family, hours in cooldowns.items():
                triggers.retrain_policy_update(model_type=family, cooldown_hours=hours)

        self._section("6/6 the registry")
        self._table()
        self.stdout.write(
            "\nOpen the result:\n"
            "  .venv/bin/python manage.py runserver\n"
            f"  admin:    http://127.0.0.1:8000/admin/   (user {DEMO_USER[0]}, "
            f"password {DEMO_USER[1]})\n"
            "  API:      http://127.0.0.1:8000/clm/models   (browsable; log in at /api-auth/login/)"
            "\n"
            "  OpenAPI:  http://127.0.0.1:8000/api/docs/\n"
        )
        if self._failed:  # a job that broke, not a version refused by its gates
            raise CommandError(
                f"{len(self._failed)} job(s) failed: {', '.join(self._failed)} (messages above)"
            )

    def _section(self, title: str) -> None:
        self.stdout.write(self.style.MIGRATE_HEADING(f"\n== {title}"))

    def _run(self, result: TriggerResult, label: str) -> None:
        """Run the job a trigger created, in-process; say why when the trigger made none."""
        job: TrainingJob | None = result.job
        if job is None:
            why = f"  {label}: {result.outcome}: {result.record.reason}"
            self.stdout.write(self.style.WARNING(why))
            return
        job = run_job_with_progress(job, label=label)
        if job.status == "failed":
            message = f"  failed at {job.error_step}: {job.error_message}"
            self.stdout.write(self.style.ERROR(message))
            self._failed.append(" ".join(label.split()))

    def _table(self) -> None:
        header = (
            f"{'model':<24}{'ver':>4}  {'status':<11}{'Sharpe':>7}{'maxDD':>7}{'win':>7}"
            f"{'PF':>6}{'trades':>7}  gates"
        )
        self.stdout.write(header)
        self.stdout.write("-" * len(header))
        versions = with_latest_evaluation(ModelVersion.objects.all()).order_by(
            "model__model_id", "version"
        )
        for v in versions:
            ev = v.latest_evaluation
            if ev is None:
                self.stdout.write(f"{v.model.model_id:<24}{v.version:>4}  {v.status:<11}")
                continue
            pf = "inf" if ev.profit_factor_infinite else f"{ev.profit_factor or 0:.2f}"
            failing = [name for name, gate in ev.gates.items() if not gate["passed"]]
            verdict = "pass" if ev.passed else "fail: " + ", ".join(failing)
            style = self.style.SUCCESS if v.status == "production" else (lambda s: s)
            self.stdout.write(
                style(
                    f"{v.model.model_id:<24}{v.version:>4}  {v.status:<11}{ev.sharpe:>7.2f}"
                    f"{ev.max_drawdown:>7.1%}{ev.win_rate:>7.1%}{pf:>6}{ev.trades:>7}  {verdict}"
                )
            )
