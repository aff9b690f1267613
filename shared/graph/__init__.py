"""The Microsoft Graph adapter: the only place that talks to Graph or knows msgraph-sdk's exceptions."""
from __future__ import annotations

from shared.graph.gateway import BatchItem, GraphGateway

__all__ = ["BatchItem", "GraphGateway"]
