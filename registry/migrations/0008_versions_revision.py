from django.db import migrations, models

# Statement-level: one bump per statement however many rows it touched. Only the columns a version
# list can filter on: the page's other columns are read afresh anyway.
CREATE = """
CREATE SEQUENCE registry_versions_revision_seq;
CREATE FUNCTION registry_versions_revision_bump() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registry_versionsrevision SET revision = nextval('registry_versions_revision_seq')
    WHERE id = 1;
    RETURN NULL;
END $$;
CREATE TRIGGER registry_modelversion_revision
    AFTER INSERT OR DELETE OR UPDATE OF model_id, status, latest_sharpe, created_at
    ON registry_modelversion FOR EACH STATEMENT
    EXECUTE FUNCTION registry_versions_revision_bump();
CREATE TRIGGER registry_modelversion_revision_truncate
    AFTER TRUNCATE ON registry_modelversion FOR EACH STATEMENT
    EXECUTE FUNCTION registry_versions_revision_bump();
CREATE TRIGGER registry_registeredmodel_revision
    AFTER DELETE OR UPDATE OF model_id, model_type, symbol, timeframe
    ON registry_registeredmodel FOR EACH STATEMENT
    EXECUTE FUNCTION registry_versions_revision_bump();
INSERT INTO registry_versionsrevision (id, revision) VALUES (1, nextval('registry_versions_revision_seq'));
"""
DROP = """
DROP TRIGGER registry_registeredmodel_revision ON registry_registeredmodel;
DROP TRIGGER registry_modelversion_revision_truncate ON registry_modelversion;
DROP TRIGGER registry_modelversion_revision ON registry_modelversion;
DROP FUNCTION registry_versions_revision_bump();
DROP SEQUENCE registry_versions_revision_seq;
"""


def _on_postgresql(sql: str):
    """Elsewhere (the SQLite file of a first run) there is no trigger and counts are not cached."""

    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "postgresql":
            schema_editor.execute(sql)

    return run


class Migration(migrations.Migration):
    dependencies = [("registry", "0007_job_waiting")]

    operations = [
        migrations.CreateModel(
            name="VersionsRevision",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(
                        default=1, editable=False, primary_key=True, serialize=False
                    ),
                ),
                ("revision", models.BigIntegerField(default=0, editable=False)),
            ],
        ),
        migrations.RunPython(_on_postgresql(CREATE), _on_postgresql(DROP)),
    ]
