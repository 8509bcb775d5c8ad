"""Helpers shared by evtrack's tests: PostgreSQL for tests, and the real server as a subprocess.

The fixtures built on these live in ``tests/conftest.py``; import helpers from here as
``from _support.server import EvtrackServer`` (``tests/`` is on ``sys.path``).
"""
