from django.apps import AppConfig


class PromotionConfig(AppConfig):
    """Gates, policies, shadow testing, A/B experiments and automatic rollback: what decides a
    trained version's status. Its tables keep the names the registry app gave them."""

    name = "training.promotion"
    label = "promotion"
    verbose_name = "Promotion: gates, shadow tests, experiments, rollback"
