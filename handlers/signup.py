"""Signup: a workflow keyed by user ID. ``run`` happens once per user, whatever the topic holds.

A second ``signups`` record for the same user ID is recorded by the ingress as a duplicate and
never reaches ``run``. ``status`` (shared) can be called at any time.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from adapter.sdk import Context, Endpoint, TerminalError, Workflow
from handlers.state import MemoryTable

__all__ = ["SignupRequest", "endpoint", "handler", "signup", "users", "welcome_mails"]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class SignupRequest(BaseModel):
    email: str = Field(max_length=254)
    name: str = Field(min_length=1, max_length=200)


signup = Workflow("Signup", description="Creates a user and sends one welcome mail.")
users: MemoryTable[dict[str, str]] = MemoryTable()
welcome_mails: MemoryTable[str] = MemoryTable()


@signup.main()
async def run(ctx: Context, req: SignupRequest) -> dict[str, str]:
    user_id = ctx.key
    assert user_id is not None
    if not _EMAIL.match(req.email):
        raise TerminalError(f"{req.email!r} is not an e-mail address", status_code=422)
    users.put(user_id, {"email": req.email, "name": req.name, "status": "active"})
    # Keyed on the user: even an at-least-once retry of run sends one mail.
    welcome_mails.put_if_absent(user_id, f"Welcome, {req.name}! ({req.email})")
    return {"user": user_id, "status": "active"}


@signup.handler()
def status(ctx: Context) -> dict[str, str]:
    assert ctx.key is not None
    user = users.get(ctx.key)
    return {"user": ctx.key, "status": user["status"] if user else "unknown"}


endpoint = Endpoint([signup])
handler = endpoint.lambda_handler()
