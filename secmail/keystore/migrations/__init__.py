"""Alembic migrations of the key store schema, shipped inside the package.

They run through :mod:`secmail.keystore.migrate` (``secmail db upgrade``),
which configures Alembic in code: no ``alembic.ini`` is read. Revisions are
written by hand, one file per schema change, never edited once released.
"""
