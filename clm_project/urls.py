from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularRedocView, SpectacularSwaggerView

from clm_project.metrics_views import metrics_view

urlpatterns = [
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("", include("evolution.api.urls")),  # before the registry's: serves /clm/candidates
    path("", include("registry.api.urls")),
    path("", include("training.retraining.api.urls")),
    path("", include("training.data.urls")),
    path("", include("training.promotion.api.urls")),
    path("", include("training.serving.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path(
        "api/redoc/",
        SpectacularRedocView.as_view(url_name="schema", template_name="api/redoc.html"),
        name="redoc",
    ),
    path("api-auth/", include("rest_framework.urls")),
]

# JSON for API paths, Django's pages elsewhere (clm_project.errors).
handler400 = "clm_project.errors.bad_request"
handler403 = "clm_project.errors.permission_denied"
handler404 = "clm_project.errors.page_not_found"
handler500 = "clm_project.errors.server_error"
