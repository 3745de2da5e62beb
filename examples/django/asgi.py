"""The ASGI application of the same project, settings.LOGGING unchanged.

Served by uvicorn's own workers:  mplog run -- uvicorn asgi:application --workers 4
or by gunicorn with uvicorn's worker class (gunicorn.conf.py has mplog's line):
    gunicorn -c gunicorn.conf.py -k uvicorn_worker.UvicornWorker asgi:application
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings")
application = get_asgi_application()
