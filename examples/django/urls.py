"""The example's one URL: the view that logs one line per request."""

from __future__ import annotations

from django.urls import path
from myapp.views import index

urlpatterns = [path("", index)]
