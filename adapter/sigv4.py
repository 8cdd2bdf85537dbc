"""Signing one AWS request with botocore's SigV4 signer, for the hot calls sent with aiohttp
(the ledger's BatchWriteItem, Lambda's Invoke). botocore resolves and refreshes the
credentials; only the send is ours."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials, RefreshableCredentials

__all__ = ["frozen_credentials", "signed_headers"]


async def frozen_credentials(credentials: Credentials) -> ReadOnlyCredentials:
    """The credentials as of now. A refresh (assumed roles, instance profiles) does blocking
    I/O, so it runs in a worker thread; otherwise this returns at once."""
    if isinstance(credentials, RefreshableCredentials) and credentials.refresh_needed():
        return await asyncio.to_thread(credentials.get_frozen_credentials)
    return credentials.get_frozen_credentials()


def signed_headers(
    frozen: ReadOnlyCredentials,
    *,
    service: str,
    region: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
) -> dict[str, str]:
    """``headers`` plus the SigV4 ones for a ``POST`` of ``body`` to ``url``."""
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(frozen, service, region).add_auth(request)
    return dict(request.headers.items())
