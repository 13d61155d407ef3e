"""Benchmarks for engineroom: ``python -m bench [burst]`` (``bench/burst.py``) and ``python -m bench delayed``
(``bench/delayed.py``); shared helpers in ``bench/_common.py``. Not part of the installed package."""
