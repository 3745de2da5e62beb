# For a logging configuration in a file of its own, given on the command line:
#   ../../.venv/bin/python -m gunicorn -c files.conf.py --log-config logging.ini app:app
#   ../../.venv/bin/python -m gunicorn -c files.conf.py --log-config-json logging.json app:app
# gunicorn applies either in the master, before its on_starting hook, and the
# workers inherit its handlers at fork. The one line mplog needs:
from mplog.gunicorn import on_exit, on_reload, on_starting, post_fork  # noqa: F401

bind = "127.0.0.1:8000"
workers = 4
