"""Alembic environment: runs migrations on the connection ``understudy.store`` hands over.

Users never need an ``alembic.ini``: ``open_store`` builds the config in code and passes its
connection in ``config.attributes["connection"]``. For ad-hoc use (``alembic -x url=... upgrade``)
a URL given with ``-x url=`` is used instead.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

config = context.config
connection = config.attributes.get("connection")

if connection is None:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    engine = sa.create_engine(str(url))
    with engine.connect() as own:
        context.configure(connection=own, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        own.commit()
else:
    # render_as_batch: SQLite can't ALTER most things, batch mode copies the table instead.
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
