"""Grafana dashboards, provisioning and Prometheus rules for the tracking metrics, as code.

``dashboards.contract`` holds the metric contract the dashboards and rules are written against;
``dashboards.build`` generates the committed Grafana JSON (``python -m dashboards.build``).
Nothing here is imported by ``tracking``: it is tooling for operators and for the test suite.
"""
