"""The release step before the web process starts: `python -m clm_project.release`.

Migrates the database and collects the static files (admin, browsable API, Swagger UI, ReDoc)
into STATIC_ROOT, where WhiteNoise serves them from. Both are idempotent, so the step runs on
every start. It uses the production settings unless DJANGO_SETTINGS_MODULE says otherwise:
manage.py defaults to the local ones, and static files collected under those would lack the
manifest that production serves by.
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.production")
    import django
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import call_command

    try:
        django.setup()
        call_command("migrate", interactive=False, verbosity=1)
        call_command("collectstatic", interactive=False, verbosity=1)
    except ImproperlyConfigured as exc:
        print(f"release: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
