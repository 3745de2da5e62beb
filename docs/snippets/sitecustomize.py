# sitecustomize.py: every program of this environment is a client of the
# server at $MPLOG_ADDRESS when that is set.
import os

if os.environ.get("MPLOG_ADDRESS"):
    import mplog

    mplog.connect()
