"""Create CLM's celery-beat entries (periodic scan, monitors, outbox relay, reaper).

Idempotent: run it on every deploy. An entry that already exists keeps the interval and enabled
flag a person gave it in the admin (Periodic tasks); only its task name, queue, description and
expiry are brought up to date. `--reset` puts the default intervals back and enables every entry.
"""

from __future__ import annotations

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

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
        try:  # one transaction: on any error no entry has changed
            done = beat_schedules_ensure(reset=reset)
        except DatabaseError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(
                f"no schedule written: the database refused ({first}); has `manage.py migrate` run?"
            ) from exc
        except ValidationError as exc:  # an entry edited in the admin into an invalid state
            raise CommandError(f"no schedule written: {'; '.join(exc.messages)}") from exc
        for name, action in done:
            entry = defaults[name]
            self.stdout.write(
                f"{name} ({entry.task}, default every {entry.every} {entry.period}): {action}"
            )
