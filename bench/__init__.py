"""Benchmarks for engineroom; run ``python -m bench`` (see ``bench/burst.py``). Not part of the installed package."""
