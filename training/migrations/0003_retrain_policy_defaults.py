"""One retrain policy per model type with the original design's defaults, editable in the admin."""

from django.db import migrations

# Periodic intervals in hours (xgboost/lightgbm 168, nhits/patchtst 336, rl_v3 24, rl_v2 as
# rl_v3); "other" has no trainer, so nothing is retrained automatically.
DEFAULTS = {
    "xgboost": (168, True),
    "lightgbm": (168, True),
    "nhits": (336, True),
    "patchtst": (336, True),
    "rl_v2": (24, True),
    "rl_v3": (24, True),
    "other": (168, False),
}


def create_policies(apps, schema_editor):
    RetrainPolicy = apps.get_model("training", "RetrainPolicy")
    for model_type, (hours, enabled) in DEFAULTS.items():
        RetrainPolicy.objects.get_or_create(
            model_type=model_type,
            defaults={"periodic_interval_hours": hours, "enabled": enabled},
        )


class Migration(migrations.Migration):
    dependencies = [("training", "0002_retraining")]

    operations = [migrations.RunPython(create_policies, migrations.RunPython.noop)]
