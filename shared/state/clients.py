"""Lazily built, cached SDK clients for Table and Queue storage over one shared aiohttp session.

Two ways in, chosen by `StorageSettings`:
- a connection string (Azurite on a developer's machine and in tests): shared-key auth;
- identity-based service URIs (Azure, `allowSharedKeyAccess: false`): an `AsyncTokenCredential`,
  by default `azure.identity.aio.ManagedIdentityCredential(client_id=…)`. Tests inject
  `devhost.azurite.AsyncDevStorageCredential` plus `connection_verify=<cert.pem>` instead.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
from azure.core.credentials_async import AsyncTokenCredential
from azure.core.pipeline.transport import AioHttpTransport
from azure.data.tables.aio import TableClient, TableServiceClient
from azure.storage.queue import TextBase64DecodePolicy, TextBase64EncodePolicy
from azure.storage.queue.aio import QueueClient, QueueServiceClient

from shared.config import StorageSettings
from shared.errors import ConfigError

log = logging.getLogger(__name__)
IDLE_SECONDS = 4.0  # below Azurite's 5 s keep-alive (Azure keeps idle connections far longer)


class StorageClients:
    """Owns the aiohttp session, the credential it created, and one service client per service."""

    def __init__(self, storage: StorageSettings, *, credential: AsyncTokenCredential | None = None,
                 connection_verify: bool | str | None = None, retry_total: int = 3,
                 connection_timeout: float = 10.0, read_timeout: float = 60.0) -> None:
        if storage.connection_string is None and not (storage.table_uri and storage.queue_uri):
            raise ConfigError("storage needs a connection string, or both table and queue service URIs")
        self.storage = storage
        self._credential: Any = credential
        self._owns_credential = False
        self._verify = connection_verify
        self._retry_total = retry_total
        self._timeouts: dict[str, Any] = {"connection_timeout": connection_timeout, "read_timeout": read_timeout}
        self._session: aiohttp.ClientSession | None = None
        self._tables: TableServiceClient | None = None
        self._queues: QueueServiceClient | None = None
        self._table_clients: dict[str, TableClient] = {}
        self._queue_clients: dict[str, QueueClient] = {}
        self._lock = asyncio.Lock()

    @property
    def uses_identity(self) -> bool:
        return self.storage.connection_string is None

    def _common(self) -> dict[str, Any]:
        # Connection settings belong to the transport: with `transport=` given, the clients' own
        # `connection_verify`/timeouts would be ignored.
        assert self._session is not None
        connection: dict[str, Any] = dict(self._timeouts)
        if self._verify is not None:
            connection["connection_verify"] = self._verify
        return {"transport": AioHttpTransport(session=self._session, session_owner=False, **connection)}

    def _get_credential(self) -> Any:
        if self._credential is None:
            from azure.identity.aio import ManagedIdentityCredential  # imported only in Azure

            self._credential = ManagedIdentityCredential(client_id=self.storage.client_id)
            self._owns_credential = True
        return self._credential

    async def _build(self) -> None:
        if self._session is None or self._session.closed:
            # Idle connections are dropped by the client before the server does: Azurite (Node) closes
            # them after 5 s, aiohttp would keep them 15 s and then reuse a socket the server is closing
            # (connection reset on every retry; seen at 100k users in bench/mass_rename.py).
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(keepalive_timeout=IDLE_SECONDS))
        table_retry: dict[str, Any] = {"retry_total": self._retry_total, "retry_backoff_factor": 0.4,
                                       "retry_backoff_max": 8}
        queue_retry: dict[str, Any] = {"retry_total": self._retry_total, "initial_backoff": 1, "increment_base": 2,
                       "random_jitter_range": 1}
        conn = self.storage.connection_string
        if conn is not None:
            try:
                self._tables = TableServiceClient.from_connection_string(conn, **self._common(), **table_retry)
                self._queues = QueueServiceClient.from_connection_string(conn, **self._common(), **queue_retry)
            except ValueError:  # the SDKs' words for a malformed string; never echo it (it holds a key)
                raise ConfigError("setting STATE_STORAGE is malformed: expected a storage connection string "
                                  "(AccountName=...;AccountKey=...;TableEndpoint=... or UseDevelopmentStorage=true)"
                                  ) from None
        else:
            assert self.storage.table_uri and self.storage.queue_uri
            credential = self._get_credential()
            self._tables = TableServiceClient(endpoint=self.storage.table_uri.rstrip("/"), credential=credential,
                                              **self._common(), **table_retry)
            self._queues = QueueServiceClient(account_url=self.storage.queue_uri.rstrip("/"),
                                              credential=credential, **self._common(), **queue_retry)
        log.debug("storage clients built (identity=%s)", self.uses_identity)

    async def table_service(self) -> TableServiceClient:
        """The table service client (built on first use)."""
        if self._tables is None:
            async with self._lock:
                if self._tables is None:
                    await self._build()
        assert self._tables is not None
        return self._tables

    async def queue_service(self) -> QueueServiceClient:
        """The queue service client (built on first use)."""
        await self.table_service()
        assert self._queues is not None
        return self._queues

    async def table(self, name: str) -> TableClient:
        """A cached client for table `name`."""
        client = self._table_clients.get(name)
        if client is None:
            client = (await self.table_service()).get_table_client(name)
            self._table_clients[name] = client
        return client

    async def queue(self, name: str) -> QueueClient:
        """A cached client for queue `name`, encoding messages as base64 like the Functions trigger expects."""
        client = self._queue_clients.get(name)
        if client is None:
            client = (await self.queue_service()).get_queue_client(
                name, message_encode_policy=TextBase64EncodePolicy(),
                message_decode_policy=TextBase64DecodePolicy())
            self._queue_clients[name] = client
        return client

    async def close(self) -> None:
        """Close clients, the session, and a credential we created (never one the caller passed in)."""
        for table_client in self._table_clients.values():
            await table_client.close()
        for queue_client in self._queue_clients.values():
            await queue_client.close()
        self._table_clients.clear()
        self._queue_clients.clear()
        if self._tables is not None:
            await self._tables.close()
        if self._queues is not None:
            await self._queues.close()
        self._tables = self._queues = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._owns_credential and self._credential is not None:
            await self._credential.close()
            self._credential = None
            self._owns_credential = False
