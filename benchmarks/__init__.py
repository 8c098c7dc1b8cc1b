"""Benchmarks: vmcore-save against makedumpfile (python -m benchmarks.run)."""
