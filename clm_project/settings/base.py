"""Settings shared by every environment, read from the environment (12-factor)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dj_database_url
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent.parent
VAR_DIR = BASE_DIR / "var"

DEFAULT_SECRET_KEY = "clm-insecure-development-key-change-me"


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if not value:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


SECRET_KEY = os.environ.get("SECRET_KEY", DEFAULT_SECRET_KEY)
DEBUG = env_bool("DEBUG", False)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI and ReDoc served from here, never from a CDN
    "django_celery_beat",
    "registry",
    "training",
    "training.promotion",
    "evolution",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Serves collectstatic's output (admin, browsable API, Swagger UI) from the app server itself.
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "clm_project.urls"
WSGI_APPLICATION = "clm_project.wsgi.application"
ASGI_APPLICATION = "clm_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "clm_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# PostgreSQL is the database of record. Without DATABASE_URL an embedded SQLite file under var/ is
# used so that a first run needs no server; tests and production always set DATABASE_URL.
DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'clm.sqlite3'}",  # "" is unset
        conn_max_age=int(os.environ.get("DB_CONN_MAX_AGE", "60")),
    )
}
# The API's hot reads (clm_project.compiled) are prepared statements on PostgreSQL: planned once
# per connection. Turn off behind a pooler in transaction mode that cannot keep them (PgBouncer
# before 1.21, or without max_prepared_statements).
CLM_DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    VAR_DIR.mkdir(exist_ok=True)
    # The demo's worker threads write concurrently; wait instead of failing on a locked file.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Django's ModelBackend with its two permission queries folded into one (clm_project.auth).
AUTHENTICATION_BACKENDS = ["clm_project.auth.ModelBackend"]

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Where `manage.py collectstatic --noinput` writes and WhiteNoise serves from.
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", str(VAR_DIR / "static")))

# Model artifacts are written through Django's storage API (registry.artifacts): under
# ARTIFACT_ROOT on one machine, or in an S3-compatible bucket that workers on several machines
# share (CLM_ARTIFACT_STORAGE=s3; credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY,
# as boto3 reads them).
ARTIFACT_ROOT = Path(os.environ.get("ARTIFACT_ROOT", str(VAR_DIR / "artifacts")))
CLM_ARTIFACT_STORAGE = os.environ.get("CLM_ARTIFACT_STORAGE", "filesystem").strip().lower()
if CLM_ARTIFACT_STORAGE not in {"filesystem", "s3"}:
    raise ValueError(f"CLM_ARTIFACT_STORAGE is {CLM_ARTIFACT_STORAGE!r}: 'filesystem' or 's3'")
# Artifacts read from a remote store are kept on local disk by sha256, least recently used out
# first once the cache holds more than CLM_ARTIFACT_CACHE_BYTES.
CLM_ARTIFACT_CACHE_DIR = Path(
    os.environ.get("CLM_ARTIFACT_CACHE_DIR", str(VAR_DIR / "artifact-cache"))
)
CLM_ARTIFACT_CACHE_BYTES = int(os.environ.get("CLM_ARTIFACT_CACHE_BYTES", str(2 * 1024**3)))


def artifact_storage_backend(kind: str) -> dict[str, Any]:
    """The `artifacts` storage of STORAGES for CLM_ARTIFACT_STORAGE `kind`."""
    if kind == "filesystem":
        return {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(ARTIFACT_ROOT)},
        }
    from botocore.config import Config

    # Bounded waits and few retries: a store that went away fails the job in seconds, not minutes.
    timeout = float(os.environ.get("CLM_S3_TIMEOUT_S", "10"))
    attempts = int(os.environ.get("CLM_S3_MAX_ATTEMPTS", "3"))
    return {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": os.environ.get("CLM_S3_BUCKET", "clm-artifacts"),
            "location": os.environ.get("CLM_S3_PREFIX", "").strip("/"),
            "endpoint_url": os.environ.get("CLM_S3_ENDPOINT_URL") or None,
            "region_name": os.environ.get("CLM_S3_REGION") or None,
            # Names are content-addressed: the same name is the same bytes.
            "file_overwrite": True,
            "querystring_auth": False,
            "client_config": Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"max_attempts": attempts, "mode": "standard"},
            ),
        },
    }


STORAGES: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "artifacts": artifact_storage_backend(CLM_ARTIFACT_STORAGE),
    "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
}

REST_FRAMEWORK = {
    # Token first: its scheme is the WWW-Authenticate challenge of a 401 without credentials
    # (with session authentication first, DRF would answer 403 and no challenge).
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "clm_project.auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
        "rest_framework.authentication.BasicAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # A JSON parser that turns pathologically deep nesting into a 400 instead of a RecursionError.
    "DEFAULT_PARSER_CLASSES": [
        "registry.api.parsers.JSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "EXCEPTION_HANDLER": "clm_project.exceptions.api_exception_handler",
    "DEFAULT_RENDERER_CLASSES": [
        "clm_project.renderers.JSONRenderer",
        "rest_framework.renderers.BrowsableAPIRenderer",
    ],
}

SPECTACULAR_SETTINGS: dict[str, Any] = {
    "TITLE": "CLM - Continuous Learning Manager",
    "DESCRIPTION": "Retrains, evaluates, promotes and rolls back trading models.",
    "VERSION": "3.1.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Air-gapped networks: the documentation pages load their JS and CSS from our static files.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Bodies are documented as JSON, the one format clients are meant to send (forms serve the
    # browsable API).
    "PARSER_WHITELIST": ["registry.api.parsers.JSONParser"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "clm_project.openapi.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {
        "ModelTypeEnum": "registry.models.ModelType",
        "ModelStatusEnum": "registry.models.ModelStatus",
        "JobStatusEnum": "registry.models.JobStatus",
        "TriggerReasonEnum": "registry.models.TriggerReason",
        "CandidateStatusEnum": "evolution.models.CandidateStatus",
        "CandidateOriginEnum": "evolution.models.CandidateOrigin",
        "EvaluationStatusEnum": "evolution.models.EvaluationStatus",
        "RunStatusEnum": "evolution.models.RunStatus",
        "GenerationStatusEnum": "evolution.models.GenerationStatus",
    },
}

# Celery: without CELERY_BROKER_URL tasks run in-process (eager), so the demo needs no broker.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or (
    "cache+memory://" if not CELERY_BROKER_URL else None
)
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TIMEZONE = TIME_ZONE
# Training tasks are idempotent by job id, which is what makes late acknowledgement safe.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Threads of the BLAS libraries (numpy's and scipy's OpenBLAS) in each worker process. A job's
# matrix work outside the fit is small, and an idle OpenBLAS thread spins: with the default (one
# a core) a worker busied a second core for nothing, so a second worker process added little.
# The model libraries take their own thread counts (the `n_jobs` parameter, torch's threads).
CLM_WORKER_BLAS_THREADS = int(os.environ.get("CLM_WORKER_BLAS_THREADS", "1"))
# Every queue and exchange name CLM declares starts with CLM_QUEUE_PREFIX (empty by default), so
# that several deployments or test runs can share one broker vhost or Redis database without ever
# reading or purging each other's messages. Workers started without -Q consume exactly these.
#
# The queues, and which process on which machine consumes them (README "Workers on many
# machines"):
# - default: dispatch work that must never wait (the scan and its batches, the outbox relay,
#   the reaper, evolution's reaper);
# - training: training jobs and evolution's candidate fits of every family not in
#   CLM_GPU_FAMILIES, and evolution's gathering of each generation;
# - gpu: training jobs and candidate fits of the CLM_GPU_FAMILIES (e.g. nhits,patchtst), for
#   workers with an accelerator;
# - lifecycle: the shadow, experiment, rollback and monitor passes, one task per model, within
#   CLM_LIFECYCLE_TIME_LIMITS: a slow pass never holds up dispatch.
CLM_QUEUE_PREFIX = os.environ.get("CLM_QUEUE_PREFIX", "")
CLM_DEFAULT_QUEUE = f"{CLM_QUEUE_PREFIX}default"
CLM_TRAINING_QUEUE = f"{CLM_QUEUE_PREFIX}training"
CLM_GPU_QUEUE = f"{CLM_QUEUE_PREFIX}gpu"
CLM_LIFECYCLE_QUEUE = f"{CLM_QUEUE_PREFIX}lifecycle"
CLM_GPU_FAMILIES = env_list("CLM_GPU_FAMILIES", [])
CELERY_TASK_DEFAULT_QUEUE = CLM_DEFAULT_QUEUE
CELERY_TASK_DEFAULT_EXCHANGE = CLM_DEFAULT_QUEUE
CELERY_TASK_DEFAULT_ROUTING_KEY = CLM_DEFAULT_QUEUE
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name), routing_key=name)
    for name in (CLM_DEFAULT_QUEUE, CLM_TRAINING_QUEUE, CLM_GPU_QUEUE, CLM_LIFECYCLE_QUEUE)
)
# Training jobs are sent with their family's queue (registry.services.training_queue_for).
CELERY_TASK_ROUTES = {
    "training.run_training_job": {"queue": CLM_TRAINING_QUEUE},
    "evolution.reap_runs": {"queue": CLM_DEFAULT_QUEUE},
    "evolution.*": {"queue": CLM_TRAINING_QUEUE},
    "training.shadow_*": {"queue": CLM_LIFECYCLE_QUEUE},
    "training.experiment*": {"queue": CLM_LIFECYCLE_QUEUE},
    "training.rollback_*": {"queue": CLM_LIFECYCLE_QUEUE},
    "training.monitor_*": {"queue": CLM_LIFECYCLE_QUEUE},
}
# Soft and hard time limits (seconds) of each lifecycle task: one model's step, or the pass that
# sends them.
CLM_LIFECYCLE_TIME_LIMITS = (
    int(os.environ.get("CLM_LIFECYCLE_SOFT_TIME_LIMIT", "300")),
    int(os.environ.get("CLM_LIFECYCLE_TIME_LIMIT", "360")),
)
# How many due models one task of the periodic scan triggers.
CLM_SCAN_BATCH_SIZE = int(os.environ.get("CLM_SCAN_BATCH_SIZE", "25"))
# Training jobs: soft/hard Celery time limits per family (seconds, sized for default budgets on
# 2 cores) and how many times a job may be claimed before it fails. They run on
# CLM_TRAINING_QUEUE.
CLM_TRAINING_TIME_LIMITS: dict[str, tuple[int, int]] = {
    "xgboost": (900, 1200),
    "lightgbm": (900, 1200),
    "nhits": (1800, 2400),
    "patchtst": (1800, 2400),
    "rl_v2": (1800, 2400),
    "rl_v3": (1800, 2400),
    "other": (900, 1200),
}
CLM_TRAINING_MAX_ATTEMPTS = 2

# How long after the longest hard time limit Redis redelivers an unacknowledged message: the time
# a worker needs to notice the limit, kill the child and report.
REDIS_VISIBILITY_MARGIN_S = 300


def broker_transport_options(url: str) -> dict[str, float]:
    """Transport options for the broker at `url`.

    On Redis, kombu redelivers a message that is not acknowledged within the visibility timeout,
    whether or not the worker holding it still runs: below the longest hard time limit (tasks
    acknowledge late) a long fit would start a second time while the first still trains.
    """
    if url.split(":", 1)[0] not in {"redis", "rediss", "redis+socket"}:
        return {}
    longest = max(hard for _, hard in CLM_TRAINING_TIME_LIMITS.values())
    return {"visibility_timeout": longest + REDIS_VISIBILITY_MARGIN_S}


CELERY_BROKER_TRANSPORT_OPTIONS = broker_transport_options(CELERY_BROKER_URL)
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Workers log through Django's LOGGING (so LOG_FORMAT=json applies to them too).
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Keep the process's own stdout and stderr in worker children. Celery would replace them with a
# LoggingProxy that lacks `encoding`, which libraries read at import (neuralforecast imports
# ray.tune, which fails on it); what tasks print still reaches the worker's output.
CELERY_WORKER_REDIRECT_STDOUTS = False

# Which market-data source the pipeline reads: a dotted path to a fetch_training_data callable.
CLM_DATA_LOADER = os.environ.get("CLM_DATA_LOADER", "training.data.fetch_training_data")
# How many bytes of bars a worker keeps between jobs (training.data.bars.fetch_training_data):
# a series is read again only when its stored bars change; 0 reads them every time.
CLM_BARS_CACHE_BYTES = int(os.environ.get("CLM_BARS_CACHE_BYTES", str(256 * 1024 * 1024)))
# Whether a training request's market has data: a dotted path to (symbol, timeframe) -> bool.
CLM_DATA_AVAILABLE = "training.data.selectors.data_available"
# Sections the apps above the registry add to GET /clm/status: key -> dotted path of a callable.
CLM_STATUS_SECTIONS = {"scheduler": "training.retraining.scheduler.scheduler_status"}
# Where a deflated Sharpe ratio finds its earlier trials beyond the registry's own evaluations:
# dotted paths to callables (symbol, timeframe, exclude) -> per-bar Sharpe ratios, registered by
# the apps that run trials.
CLM_TRIAL_SOURCES = ["evolution.selectors.candidate_trial_sharpes"]
CLM_AUTO_PROMOTE = env_bool("CLM_AUTO_PROMOTE", True)
# Draws an evaluation's equity-curve PNG from the points its job stored: a dotted path to
# (bytes) -> PNG bytes, called when the picture is first asked for.
CLM_EQUITY_CURVE_RENDERER = "training.evaluation.plots.equity_curve_png_from_series"

LOG_FORMAT = os.environ.get("LOG_FORMAT", "text")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "clm_project.logging.JsonFormatter"},
    },
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            "formatter": "json" if LOG_FORMAT == "json" else "text",
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "lightning": {"level": "WARNING"},
        "pytorch_lightning": {"level": "WARNING"},
        "lightning.pytorch": {"level": "WARNING"},
    },
}

# --- Retraining (training.retraining: triggers, scheduler, events, monitors) ---
# The topic exchange on the Celery broker that outbox events go to and incoming events come from.
CLM_EVENTS_EXCHANGE = os.environ.get("CLM_EVENTS_EXCHANGE", f"{CLM_QUEUE_PREFIX}clm.events")
CLM_EVENTS_INCOMING_QUEUE = os.environ.get(
    "CLM_EVENTS_INCOMING_QUEUE", f"{CLM_QUEUE_PREFIX}clm.incoming"
)
# Workers consume incoming events (clm_project.celery.IncomingEventsStep) unless this is off (e.g.
# on dedicated training workers).
CLM_EVENTS_CONSUME = env_bool("CLM_EVENTS_CONSUME", True)
# The most periodic jobs one scan queues; the other due models wait for the next scan.
CLM_SCAN_MAX_JOBS = int(os.environ.get("CLM_SCAN_MAX_JOBS", "100"))
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update(
    {
        "MonitorStatusEnum": "training.models.MonitorStatus",
        "TriggerOutcomeEnum": "training.models.TriggerOutcome",
        "TriggerSourceEnum": "training.models.TriggerSource",
    }
)

# --- Promotion (training.promotion: gates, policies, shadow, experiments, rollback) ---
SPECTACULAR_SETTINGS["ENUM_NAME_OVERRIDES"].update(
    {
        "ShadowModeEnum": "training.promotion.models.ShadowMode",
        "AlphaSpendingEnum": "training.promotion.models.AlphaSpending",
        "ComparisonStatusEnum": "training.promotion.models.ComparisonStatus",
        "ShadowDecisionEnum": "training.promotion.models.ShadowDecision",
        "ExperimentStatusEnum": "training.promotion.models.ExperimentStatus",
        "ExperimentMetricEnum": "training.promotion.models.ExperimentMetric",
        "StoppingRuleEnum": "training.promotion.models.StoppingRule",
        "ReturnSourceEnum": "training.promotion.models.ReturnSource",
        "ExperimentDecisionEnum": "training.promotion.models.ExperimentDecision",
        "ArmRoleEnum": "training.promotion.models.ArmRole",
        "RollbackOutcomeEnum": "training.promotion.models.RollbackOutcome",
    }
)

# --- Liveness: nothing stays queued, dead workers are noticed, dispatch never blocks a request
# (registry.services, training.tasks.reap_stuck_jobs_now, registry.liveness) ---
# A running job's worker refreshes its heartbeat this often; one older than the timeout means the
# worker died, and the reaper (every 15 s, see training.retraining.scheduler) takes the job back.
CLM_JOB_HEARTBEAT_INTERVAL = float(os.environ.get("CLM_JOB_HEARTBEAT_INTERVAL", "10"))
CLM_JOB_HEARTBEAT_TIMEOUT = float(os.environ.get("CLM_JOB_HEARTBEAT_TIMEOUT", "60"))
# A job queued this long without a worker claiming it is sent again (duplicates are harmless: the
# claim is a compare-and-set), and failed once it was sent this many times in vain.
CLM_DISPATCH_TIMEOUT = float(os.environ.get("CLM_DISPATCH_TIMEOUT", "600"))
CLM_DISPATCH_MAX_TRIES = int(os.environ.get("CLM_DISPATCH_MAX_TRIES", "3"))
# A job still pending this long after it was created (the broker was down) is dispatched again.
CLM_PENDING_REDISPATCH_AFTER = float(os.environ.get("CLM_PENDING_REDISPATCH_AFTER", "30"))
# Workers and celery-beat record a sign of life this often (shown by /health with its age).
CLM_LIVENESS_INTERVAL = float(os.environ.get("CLM_LIVENESS_INTERVAL", "10"))
# Trainers for more model types, as "model_type=package.module:Class,...": how tests plug in a
# trainer of their own; the six families are always there.
CLM_EXTRA_TRAINERS = env_list("CLM_EXTRA_TRAINERS", [])
# Bounded waits on the broker and the result backend: a request that dispatches a job answers in
# seconds when either is down (the job stays pending for the reaper); training tasks store no
# result, so sending one never waits on the result backend.
CLM_BROKER_TIMEOUT_S = float(os.environ.get("CLM_BROKER_TIMEOUT_S", "2"))
CELERY_BROKER_CONNECTION_TIMEOUT = CLM_BROKER_TIMEOUT_S
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": 1,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.2,
}
# A publish that finds no connection tries to connect once (kombu's default channel would retry
# for connect_timeout with 2 s pauses), and the publish itself is retried once: a refused
# connection fails in a fraction of a second, a host that does not answer in about twice the
# timeout. A worker's consumer reconnects on its own terms (broker_connection_max_retries).
CELERY_BROKER_TRANSPORT_OPTIONS = {
    **globals().get("CELERY_BROKER_TRANSPORT_OPTIONS", {}),
    "max_retries": 0,
}
if CELERY_BROKER_URL.split(":", 1)[0] in {"redis", "rediss"}:
    CELERY_BROKER_TRANSPORT_OPTIONS.update(
        socket_connect_timeout=CLM_BROKER_TIMEOUT_S,
        socket_timeout=max(CLM_BROKER_TIMEOUT_S, 5.0),  # above BRPOP's 1 s wait
    )
CELERY_REDIS_SOCKET_CONNECT_TIMEOUT = CLM_BROKER_TIMEOUT_S
CELERY_REDIS_SOCKET_TIMEOUT = max(CLM_BROKER_TIMEOUT_S, 5.0)
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {
    "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.2,
                     "interval_max": 0.2},
}  # fmt: skip
# celery-beat records its ticks (registry.liveness.Scheduler is django-celery-beat's, plus that).
CELERY_BEAT_SCHEDULER = "registry.liveness:Scheduler"
# --- end of liveness ---
