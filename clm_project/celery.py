"""The one Celery app. Start a worker with:

.venv/bin/celery -A clm_project worker -c 2 -l info

Workers and beat run production settings unless DJANGO_SETTINGS_MODULE says otherwise: a worker is
only ever started for real (the demo runs its tasks in-process, tests name their settings).
"""

import os

from celery import Celery

from clm_project import celery_metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.production")

app = Celery("clm_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
celery_metrics.connect()
