"""Developer utilities beside the library (not installed): ``python tools/<name>.py ...``.

A package only so that tests can import them (``from tools.fixture import run_fixture``, with the
repository root on ``sys.path``, as ``tests/conftest.py`` puts it).
"""
