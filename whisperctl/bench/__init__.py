"""Benchmarks: :mod:`.runner` measures the matrix, :mod:`.report` renders it."""
