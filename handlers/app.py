"""All example services in one deployment: ``uvicorn handlers.app:app`` (HTTP) or
``handlers/app.handler`` (one Lambda function serving every service)."""

from __future__ import annotations

from adapter.sdk import Endpoint
from handlers.accounts import account
from handlers.audit import audit
from handlers.greeter import greeter
from handlers.signup import signup

__all__ = ["app", "endpoint", "handler", "reset_state"]

endpoint = Endpoint([greeter, account, signup, audit])
app = endpoint.asgi_app()
handler = endpoint.lambda_handler()


def reset_state() -> None:
    """Forget everything the examples stored (tests and demos start from scratch)."""
    from handlers import accounts, audit, greeter, signup

    for table in (
        greeter.sent,
        accounts.balances,
        accounts.frozen,
        signup.users,
        signup.welcome_mails,
        audit.entries,
    ):
        table.clear()
