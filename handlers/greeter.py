"""Greeter: a stateless service. Every record of a ``members.joined`` topic gets a greeting.

Service handlers run in parallel, in no particular order. The greeting "sent" is recorded
under the invocation ID, so a redelivered record does not greet twice.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from adapter.sdk import Context, Endpoint, Service
from handlers.state import MemoryTable

__all__ = ["Greeting", "endpoint", "greeter", "handler", "sent"]

_SALUTATIONS = {"en": "Hello", "de": "Hallo", "fr": "Bonjour", "es": "Hola"}


class Greeting(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    locale: Literal["en", "de", "fr", "es"] = "en"


greeter = Service("Greeter", description="Greets new members, once per record.")
sent: MemoryTable[dict[str, str]] = MemoryTable()


@greeter.handler()
async def greet(ctx: Context, req: Greeting) -> dict[str, str]:
    text = f"{_SALUTATIONS[req.locale]}, {req.name}!"
    sent.put_if_absent(
        ctx.invocation_id,
        {"to": req.name, "text": text, "topic": ctx.kafka.topic if ctx.kafka else ""},
    )
    return {"greeting": text}


endpoint = Endpoint([greeter])
handler = endpoint.lambda_handler()
