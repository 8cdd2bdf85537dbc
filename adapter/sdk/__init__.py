"""The handler SDK: declare services, virtual objects and workflows once; serve them over HTTP
(an ASGI app) or as AWS Lambda functions.

    from adapter.sdk import Context, Endpoint, Service, TerminalError

    greeter = Service("Greeter")

    @greeter.handler()
    async def greet(ctx: Context, req: Greeting) -> dict[str, str]:
        if not req.name:
            raise TerminalError("name is required")
        return {"message": f"Hello, {req.name}!"}

    endpoint = Endpoint([greeter])
    app = endpoint.asgi_app()            # HTTP: uvicorn handlers.greeter:app
    handler = endpoint.lambda_handler()  # Lambda: handler: handlers/greeter.handler

Importing this package needs only pydantic: no Kafka client, no boto3, no poller. The ASGI
app needs Starlette; signature verification needs PyJWT and cryptography, both imported when
used.
"""

from adapter.sdk.context import Context, KafkaMetadata
from adapter.sdk.endpoint import IDENTITY_KEYS_ENV, Endpoint
from adapter.sdk.errors import HandlerError, RetryableError, TerminalError
from adapter.sdk.replay import MemoryReplayStore, ReplayStore
from adapter.sdk.runtime import Response
from adapter.sdk.service import (
    HandlerKind,
    InputKind,
    Service,
    ServiceKind,
    VirtualObject,
    Workflow,
)

__all__ = [
    "IDENTITY_KEYS_ENV",
    "Context",
    "Endpoint",
    "HandlerError",
    "HandlerKind",
    "InputKind",
    "KafkaMetadata",
    "MemoryReplayStore",
    "ReplayStore",
    "Response",
    "RetryableError",
    "Service",
    "ServiceKind",
    "TerminalError",
    "VirtualObject",
    "Workflow",
]
