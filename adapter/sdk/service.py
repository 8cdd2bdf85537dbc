"""Declaring handlers: services, virtual objects and workflows, as in Restate's SDK.

    greeter = Service("Greeter")

    @greeter.handler()
    async def greet(ctx: Context, req: Greeting) -> dict[str, str]: ...

    account = VirtualObject("Account")

    @account.handler()                      # exclusive: one at a time per key, in order
    async def apply(ctx: Context, payment: Payment) -> None: ...

    @account.handler(kind="shared")         # shared: keyed, concurrent
    def balance(ctx: Context) -> dict[str, int]: ...

    signup = Workflow("Signup")

    @signup.main()                          # runs once per workflow ID (the record key)
    async def run(ctx: Context, req: SignupRequest) -> None: ...

The input is declared by the second parameter's annotation: ``bytes`` takes the raw record
value (input kind ``RAW``); anything else is JSON, parsed and validated by pydantic (a model,
a dataclass, ``dict[str, int]``, ...); no second parameter ignores the body. Handlers may be
``async def`` or plain functions (run in a worker thread so they never block the server).
"""

from __future__ import annotations

import enum
import inspect
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic import TypeAdapter

__all__ = [
    "HandlerKind",
    "HandlerSpec",
    "InputKind",
    "Service",
    "ServiceDefinition",
    "ServiceKind",
    "VirtualObject",
    "Workflow",
]

F = TypeVar("F", bound=Callable[..., Any])


class ServiceKind(enum.StrEnum):
    SERVICE = "SERVICE"
    VIRTUAL_OBJECT = "VIRTUAL_OBJECT"
    WORKFLOW = "WORKFLOW"


class HandlerKind(enum.StrEnum):
    """``SERVICE`` is shown as ``null`` in the manifest, as Restate does for service handlers."""

    SERVICE = "SERVICE"
    EXCLUSIVE = "EXCLUSIVE"
    SHARED = "SHARED"
    WORKFLOW = "WORKFLOW"


class InputKind(enum.StrEnum):
    JSON = "JSON"
    RAW = "RAW"
    NONE = "NONE"  # no input parameter: shown as JSON in the manifest, the body is ignored


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One declared handler: its name, type, input and the function that implements it."""

    name: str
    kind: HandlerKind
    input_kind: InputKind
    fn: Callable[..., Any]
    input_adapter: TypeAdapter[Any] | None
    is_async: bool

    @property
    def manifest_input(self) -> str:
        return "RAW" if self.input_kind is InputKind.RAW else "JSON"


def _input_of(fn: Callable[..., Any]) -> tuple[InputKind, TypeAdapter[Any] | None]:
    params = list(inspect.signature(fn).parameters.values())
    if not params:
        raise TypeError(f"handler {fn.__qualname__} must take the context as first parameter")
    if len(params) == 1:
        return InputKind.NONE, None
    if len(params) > 2:
        raise TypeError(
            f"handler {fn.__qualname__} takes (ctx) or (ctx, input), not {len(params)} parameters"
        )
    try:
        hints = typing.get_type_hints(fn)
    except NameError as exc:
        raise TypeError(
            f"handler {fn.__qualname__}: cannot resolve the input annotation ({exc}); define "
            "the input type at module level"
        ) from exc
    annotation = hints.get(params[1].name, Any)
    if annotation is bytes:
        return InputKind.RAW, None
    return InputKind.JSON, TypeAdapter(annotation)


class ServiceDefinition:
    """Common base: a named set of handlers of one service type."""

    kind: ServiceKind = ServiceKind.SERVICE

    def __init__(self, name: str, *, description: str | None = None) -> None:
        if not name or "/" in name:
            raise ValueError(f"invalid service name {name!r}")
        self.name = name
        self.description = description
        self.handlers: dict[str, HandlerSpec] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, handlers={sorted(self.handlers)})"

    @property
    def keyed(self) -> bool:
        return self.kind is not ServiceKind.SERVICE

    def _register(self, fn: F, name: str | None, kind: HandlerKind) -> F:
        handler_name = name or fn.__name__
        if handler_name in self.handlers:
            raise ValueError(f"{self.name} already has a handler {handler_name!r}")
        if kind is HandlerKind.WORKFLOW and any(
            h.kind is HandlerKind.WORKFLOW for h in self.handlers.values()
        ):
            raise ValueError(f"workflow {self.name} already has a main handler")
        input_kind, adapter = _input_of(fn)
        self.handlers[handler_name] = HandlerSpec(
            name=handler_name,
            kind=kind,
            input_kind=input_kind,
            fn=fn,
            input_adapter=adapter,
            is_async=inspect.iscoroutinefunction(fn),
        )
        return fn


class Service(ServiceDefinition):
    """Stateless handlers: records run in parallel, in no particular order."""

    kind = ServiceKind.SERVICE

    def handler(self, name: str | None = None) -> Callable[[F], F]:
        return lambda fn: self._register(fn, name, HandlerKind.SERVICE)


class VirtualObject(ServiceDefinition):
    """Keyed handlers; the record key is the object key.

    ``exclusive`` handlers (the default) run one at a time per key, in partition order;
    ``shared`` handlers run concurrently.
    """

    kind = ServiceKind.VIRTUAL_OBJECT

    def handler(
        self, name: str | None = None, *, kind: Literal["exclusive", "shared"] = "exclusive"
    ) -> Callable[[F], F]:
        handler_kind = HandlerKind.EXCLUSIVE if kind == "exclusive" else HandlerKind.SHARED
        return lambda fn: self._register(fn, name, handler_kind)


class Workflow(ServiceDefinition):
    """A ``main`` handler that runs once per workflow ID (the record key), plus shared ones."""

    kind = ServiceKind.WORKFLOW

    def main(self, name: str | None = None) -> Callable[[F], F]:
        return lambda fn: self._register(fn, name, HandlerKind.WORKFLOW)

    def handler(self, name: str | None = None) -> Callable[[F], F]:
        return lambda fn: self._register(fn, name, HandlerKind.SHARED)
