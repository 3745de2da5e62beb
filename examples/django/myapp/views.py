"""One view that logs one line per request to the ``myapp`` logger."""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse

log = logging.getLogger("myapp")


def index(request: HttpRequest) -> HttpResponse:
    """Log ``rid=<id>`` and answer ``ok <id>``."""
    rid = request.GET.get("rid", "-")
    log.info("rid=%s", rid)
    return HttpResponse(f"ok {rid}\n", content_type="text/plain")
