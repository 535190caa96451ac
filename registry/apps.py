from django.apps import AppConfig


class RegistryConfig(AppConfig):
    name = "registry"
    verbose_name = "Model registry"

    def ready(self) -> None:
        from clm_project import metrics
        from registry import liveness  # noqa: F401 - connects the worker's sign of life
        from registry.models import ModelType

        metrics.series_initialise(model_types=list(ModelType.values))
