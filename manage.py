#!/usr/bin/env python
import os
import sys


def main() -> None:
    # The local settings (DEBUG on) for runserver, the demo and commands run by hand; wsgi.py,
    # asgi.py and `python -m clm_project.release` default to the production ones.
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
