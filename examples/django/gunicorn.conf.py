# The one line mplog needs: the master runs the listener, and the file that
# every worker's settings.LOGGING configures is written and rotated by it alone.
# Run:  ../../.venv/bin/python -m gunicorn -c gunicorn.conf.py wsgi
# (ASGI: add -k uvicorn_worker.UvicornWorker and serve asgi:application)
from mplog.gunicorn import on_exit, on_reload, on_starting, post_fork  # noqa: F401

bind = "127.0.0.1:8000"
workers = 4
errorlog = "gunicorn-error.log"
loglevel = "info"
