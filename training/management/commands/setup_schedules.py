"""Create CLM's celery-beat entries (periodic scan, monitors, outbox relay, reaper).

Idempotent: run it on every deploy. An entry that already exists keeps the interval and enabled
flag a person gave it in the admin (Periodic tasks); only its task name, queue, description and
expiry are brought up to date. `--reset` puts the default intervals back and enables every entry.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand

from training.retraining.scheduler import SCHEDULES, beat_schedules_ensure


class Command(BaseCommand):
    help = (
        "Create or update CLM's celery-beat entries. Existing entries keep their interval and "
        "enabled flag (edited in the admin) unless --reset is given."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument(
            "--reset",
            action="store_true",
            help="Restore the default intervals and enable every entry.",
        )

    def handle(self, *args, reset: bool = False, **options) -> None:
        defaults = {entry.name: entry for entry in SCHEDULES}
        for name, action in beat_schedules_ensure(reset=reset):
            entry = defaults[name]
            self.stdout.write(
                f"{name} ({entry.task}, default every {entry.every} {entry.period}): {action}"
            )
