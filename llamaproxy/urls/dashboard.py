"""Port 8080: dashboard, admin, management API, health."""

from django.contrib import admin
from django.urls import path

from llamaproxy import views
from llamaproxy.manage_api import api as manage_api

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/manage/", manage_api.urls),
    path("health", views.health, name="health"),
    path("", views.dashboard_index, name="dashboard"),
]
