"""The one Celery app. Start a worker with:

.venv/bin/celery -A clm_project worker -Q default,training -c 2 -l info
"""

import os

from celery import Celery

from clm_project import celery_metrics

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.production")

app = Celery("clm_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
celery_metrics.connect()
