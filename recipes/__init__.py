"""Experiment pipelines beside the library (not installed): ``python recipes/<name>.py ...``.

A package only so that tests can import them (``from recipes.synthetic_tiny import export``, with the
repository root on ``sys.path``, as ``tests/conftest.py`` puts it).
"""
