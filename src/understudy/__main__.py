"""``python -m understudy``: the same command line as ``understudy``."""

from understudy.cli import app

app()
