"""Benchmarks: the generated code against PyTorch, HIPS autograd and bare NumPy; ``derive build`` timings.

Run ``derive bench`` (or ``python -m benchmarks``). Sizes come from each
op's ``bench_sizes``; the peers from ``references.py``, keyed by op name.
"""
