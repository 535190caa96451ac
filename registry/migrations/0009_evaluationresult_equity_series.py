from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("registry", "0008_versions_revision")]

    operations = [
        migrations.AddField(
            model_name="evaluationresult",
            name="equity_series",
            field=models.CharField(blank=True, max_length=500),
        ),
    ]
