# The one line mplog needs: the master runs the listener, and the file that
# create_app() configures in every worker is written and rotated by it alone.
# Run:  ../../.venv/bin/python -m gunicorn -c gunicorn.conf.py 'app:create_app()'
from mplog.gunicorn import on_exit, on_reload, on_starting, post_fork  # noqa: F401

bind = "127.0.0.1:8000"
workers = 4
errorlog = "gunicorn-error.log"
loglevel = "info"
