"""The admin API: Restate-compatible routes for subscriptions, deployments, services,
invocations and Kafka clusters, plus health, readiness, version and metrics.

``create_app(AdminState(...))`` returns the Starlette application; the poller serves it with
uvicorn (:mod:`adapter.poller`), the CLI talks to it (:mod:`adapter.api.client`).
"""

from adapter.api.app import create_app
from adapter.api.catalog import ClusterCatalog
from adapter.api.endpoint import AdminState

__all__ = ["AdminState", "ClusterCatalog", "create_app"]
