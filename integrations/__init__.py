"""Integrations fed by the tracking callback bus: Prometheus, OpenTelemetry, SQL, structlog."""
