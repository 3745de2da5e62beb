# Every process of this server logs through one listener in the master:
# gunicorn's error log, its access log and the app's own records.
# Run:  ../../.venv/bin/python -m gunicorn -c gunicorn.conf.py app:app
from mplog.gunicorn import on_exit, on_reload, on_starting, post_fork  # noqa: F401

bind = "127.0.0.1:8000"
workers = 4
errorlog = "gunicorn-error.log"  # the app's records go here too
accesslog = "gunicorn-access.log"
loglevel = "info"
# user = "www-data"  # a master started as root: workers switch to this user and still log through it
