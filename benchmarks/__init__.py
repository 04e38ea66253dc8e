"""Benchmarks: each of dramatiq-ray's paths measured beside its baseline, in the same run, on the same services.

Run ``python -m benchmarks`` (or ``tox -e bench``); ``--quick`` runs tiny counts in well under a minute so that
CI keeps the harness alive. Every run writes a JSON report and renders ``docs/benchmarks.md`` with PNG charts.
"""
