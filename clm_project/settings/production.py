"""Production settings, the default of wsgi.py, asgi.py and `python -m clm_project.release`.

They refuse to start with DEBUG on, the development key or no DATABASE_URL. The defaults assume
what a deployment usually is: gunicorn behind a proxy that ends TLS and sets X-Forwarded-Proto.
`BEHIND_TLS_PROXY=false` turns the HTTPS defaults off for a plain-HTTP trial (and `manage.py check
--deploy` then says what that costs); each SECURE_* setting below also has its own switch.
"""

import os

from django.core.exceptions import ImproperlyConfigured

from .base import *  # noqa: F403
from .base import DEFAULT_SECRET_KEY, SECRET_KEY, STORAGES, env_bool, env_list

DEBUG = env_bool("DEBUG", False)
if DEBUG:
    raise ImproperlyConfigured("production settings refuse DEBUG=true")
# The rule of Django's own deployment check (security.W009).
if SECRET_KEY == DEFAULT_SECRET_KEY or len(SECRET_KEY) < 50 or len(set(SECRET_KEY)) < 5:
    raise ImproperlyConfigured(
        "production settings need SECRET_KEY set to a long random value (50 characters or more), "
        "e.g. python -c 'import secrets; print(secrets.token_urlsafe(50))'"
    )
if not os.environ.get("DATABASE_URL"):
    raise ImproperlyConfigured(
        "production settings need DATABASE_URL (e.g. postgres://user:password@host:5432/clm)"
    )

# Hashed, compressed copies written by `collectstatic --noinput`, served by WhiteNoise with
# far-future cache headers. A page naming a file collectstatic did not write fails loudly.
STORAGES = {
    **STORAGES,
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}

BEHIND_TLS_PROXY = env_bool("BEHIND_TLS_PROXY", True)
# The proxy says which requests came in over HTTPS; gunicorn itself only ever sees HTTP.
if env_bool("TRUST_X_FORWARDED_PROTO", BEHIND_TLS_PROXY):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", BEHIND_TLS_PROXY)
# Probes and Prometheus scrapes come from inside the network, often over plain HTTP.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^metrics$"]
SECURE_HSTS_SECONDS = int(
    os.environ.get("SECURE_HSTS_SECONDS", "31536000" if BEHIND_TLS_PROXY else "0")
)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", BEHIND_TLS_PROXY)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", BEHIND_TLS_PROXY)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", BEHIND_TLS_PROXY)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", BEHIND_TLS_PROXY)
# Origins the admin's forms may be posted from when the proxy's public name differs from Host.
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
SECURE_CONTENT_TYPE_NOSNIFF = True
