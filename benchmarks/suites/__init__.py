"""Benchmark suites: scripts run from a source checkout (`python -m edgekd.benchmarks.suites.NAME`).

They are not part of the installed wheel (the device install ships the torch-free harness only); several
need the training extra.
"""
