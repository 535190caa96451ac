"""The WSGI entry point: production settings unless DJANGO_SETTINGS_MODULE says otherwise."""

import gc
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "clm_project.settings.production")
application = get_wsgi_application()
# What importing the project made (some 180,000 objects: settings, URL patterns, models, numpy,
# pandas) lives as long as the process: kept out of the garbage collector's full passes, which
# would otherwise walk all of it (80 ms here) in the middle of a request.
gc.freeze()
