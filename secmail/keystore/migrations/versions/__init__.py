"""Revision scripts, named ``NNNN_what.py`` with ``revision = "NNNN"``."""
