"""A local AWS Lambda endpoint: the Invoke API over HTTP, running functions in-process.

What serverless-offline does for Node: the functions declared in ``serverless.yml`` are
imported from this checkout and run in this process, and the real boto3 Lambda client talks to
them over HTTP (``endpoint_url=http://127.0.0.1:PORT``), in tests and in ``make dev``.

    POST /2015-03-31/functions/{FunctionName}/invocations[?Qualifier=…]

``FunctionName`` may be the short name from ``serverless.yml`` (``greeter``), the deployed
name (``kafka-ingress-dev-greeter``) or an ARN of either. Like Lambda:

* ``X-Amz-Invocation-Type``: ``RequestResponse`` (default) runs and answers the result,
  ``Event`` answers 202 and runs in the background, ``DryRun`` answers 204;
* an exception in the function → 200 with ``X-Amz-Function-Error: Unhandled`` and
  ``{"errorMessage", "errorType", "requestId", "stackTrace"}``; a failed import →
  ``Runtime.ImportModuleError``; over the function's ``timeout`` → ``Sandbox.Timedout``;
  a response over 6 MB → ``Function.ResponseSizeTooLarge``;
* more concurrent invocations than the function's ``reservedConcurrency`` → 429
  ``TooManyRequestsException``; unknown function → 404 ``ResourceNotFoundException``;
  a request over 6 MB → 413 ``RequestTooLargeException``; not JSON → 400
  ``InvalidRequestContentException`` (errors as ``x-amzn-ErrorType`` + JSON, as botocore reads
  them);
* ``X-Amz-Log-Type: Tail`` → ``X-Amz-Log-Result`` with the START/END/REPORT lines.

Functions run on a thread pool (Lambda handlers are synchronous), so the server's event loop
never blocks. :class:`~adapter.local.asgi_server.AsgiServer` (re-exported here) serves any ASGI
app on loopback (this endpoint, the handlers' HTTP app) inside the caller's event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib
import json
import logging
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from adapter.errors import ConfigError
from adapter.local.asgi_server import AsgiServer

__all__ = [
    "SERVERLESS_FILE",
    "AsgiServer",
    "FunctionSpec",
    "LambdaContext",
    "LocalLambda",
    "load_serverless",
    "load_serverless_functions",
    "main",
]

log = logging.getLogger(__name__)

SERVERLESS_FILE = Path(__file__).resolve().parents[2] / "serverless.yml"
MAX_PAYLOAD_BYTES = 6 * 1024 * 1024
_DEFAULT_TIMEOUT_S = 6.0  # the Serverless Framework's default function timeout
_DEFAULT_MEMORY_MB = 1024
_LOG_TAIL_BYTES = 4096

LambdaFunction = Callable[[Any, Any], Any]


@dataclass(frozen=True, slots=True)
class FunctionSpec:
    """One function: where its handler is (``module.attr`` or a callable) and its limits."""

    name: str
    handler: str | LambdaFunction
    timeout_s: float = _DEFAULT_TIMEOUT_S
    memory_mb: int = _DEFAULT_MEMORY_MB
    reserved_concurrency: int | None = None
    aliases: tuple[str, ...] = ()


def _handler_path(handler: str) -> str:
    """``handlers/greeter.handler`` (serverless' file path form) → ``handlers.greeter.handler``."""
    module, _, attr = handler.rpartition(".")
    return f"{module.replace('/', '.')}.{attr}"


def _cfn_tag(loader: Any, suffix: str, node: Any) -> Any:
    """CloudFormation short forms (``!Ref x``, ``!GetAtt a.b``, ``!Sub …``) as their long form."""
    import yaml

    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt" and isinstance(value, str):
            value = value.split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    return {name: value}


def load_serverless(path: str | Path = SERVERLESS_FILE) -> dict[str, Any]:
    """Parse a serverless.yml (CloudFormation tags included); variables stay as text."""
    import yaml

    class _Loader(yaml.SafeLoader):
        pass

    _Loader.add_multi_constructor("!", _cfn_tag)
    try:
        document = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot be read as YAML: {exc}") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return document


def load_serverless_functions(
    path: str | Path = SERVERLESS_FILE, *, stage: str = "dev"
) -> list[FunctionSpec]:
    """The functions of a serverless.yml, with their deployed names as aliases."""
    document = load_serverless(path)
    service = str(document.get("service", ""))
    provider = document.get("provider") or {}
    functions = document.get("functions") or {}
    if not isinstance(functions, Mapping):
        raise ConfigError(f"{path}: 'functions' must be a mapping")
    specs = []
    for name, spec in functions.items():
        if not isinstance(spec, Mapping) or not isinstance(spec.get("handler"), str):
            raise ConfigError(f"{path}: function {name!r} needs a 'handler'")
        deployed = spec.get("name")
        aliases = [f"{service}-{stage}-{name}"]
        if isinstance(deployed, str) and "${" not in deployed:
            aliases.append(deployed)
        specs.append(
            FunctionSpec(
                name=str(name),
                handler=_handler_path(spec["handler"]),
                timeout_s=float(spec.get("timeout") or provider.get("timeout") or 6),
                memory_mb=int(spec.get("memorySize") or provider.get("memorySize") or 1024),
                reserved_concurrency=spec.get("reservedConcurrency"),
                aliases=tuple(aliases),
            )
        )
    return specs


class LambdaContext:
    """The context object Lambda's Python runtime passes as the handler's second argument."""

    def __init__(self, spec: FunctionSpec, arn: str, request_id: str, deadline: float) -> None:
        self.function_name = spec.name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = str(spec.memory_mb)
        self.aws_request_id = request_id
        self.log_group_name = f"/aws/lambda/{spec.name}"
        self.log_stream_name = f"local/[$LATEST]{uuid.uuid4().hex}"
        self.identity = None
        self.client_context = None
        self._deadline = deadline

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


@dataclass(slots=True)
class _Function:
    spec: FunctionSpec
    fn: LambdaFunction | None = None
    import_error: dict[str, Any] | None = None
    running: int = 0
    invocations: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _aws_error(status: int, code: str, message: str, **extra: str) -> Response:
    return JSONResponse(
        {"Type": "User", "message": message, **extra},
        status_code=status,
        headers={"x-amzn-ErrorType": code, "x-amzn-RequestId": str(uuid.uuid4())},
    )


def _error_payload(exc: BaseException, request_id: str) -> dict[str, Any]:
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "requestId": request_id,
        "stackTrace": traceback.format_exception(exc)[1:],
    }


class LocalLambda:
    """The local Lambda endpoint: ``app`` is the ASGI app; serve it with :class:`AsgiServer`."""

    def __init__(
        self,
        functions: list[FunctionSpec] | Mapping[str, str | LambdaFunction],
        *,
        region: str = "us-east-1",
        account_id: str = "000000000000",
        max_workers: int = 32,
    ) -> None:
        if isinstance(functions, Mapping):
            functions = [FunctionSpec(name, handler) for name, handler in functions.items()]
        self.region = region
        self.account_id = account_id
        self._functions: dict[str, _Function] = {}
        self._names: dict[str, str] = {}
        for spec in functions:
            self._functions[spec.name] = _Function(spec)
            for alias in (spec.name, *spec.aliases):
                self._names[alias] = spec.name
        self._executor = ThreadPoolExecutor(max_workers, thread_name_prefix="local-lambda")
        self._background: set[asyncio.Task[None]] = set()
        self.app = Starlette(
            routes=[
                Route(
                    "/2015-03-31/functions/{name}/invocations",
                    self._invoke,
                    methods=["POST"],
                )
            ]
        )

    @classmethod
    def from_serverless(
        cls, path: str | Path = SERVERLESS_FILE, *, stage: str = "dev", **kwargs: Any
    ) -> LocalLambda:
        return cls(load_serverless_functions(path, stage=stage), **kwargs)

    def __repr__(self) -> str:
        return f"LocalLambda(functions={sorted(self._functions)})"

    @property
    def function_names(self) -> list[str]:
        return sorted(self._functions)

    def arn(self, name: str) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account_id}:function:{name}"

    def invocations(self, name: str) -> int:
        return self._functions[name].invocations

    def close(self) -> None:
        """Stop the worker threads (waiting for functions still running)."""
        for task in self._background:
            task.cancel()
        self._executor.shutdown(wait=True, cancel_futures=True)

    # -- the Invoke API ---------------------------------------------------------------------

    def _resolve(self, name: str) -> _Function | None:
        # ARN (arn:aws:lambda:region:account:function:name[:qualifier]) or name[:qualifier].
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6] if len(parts) >= 7 else ""
        else:
            name = name.split(":", 1)[0]
        canonical = self._names.get(name)
        return self._functions.get(canonical) if canonical else None

    def _load(self, function: _Function) -> None:
        with function.lock:
            if function.fn is not None or function.import_error is not None:
                return
            handler = function.spec.handler
            if callable(handler):
                function.fn = handler
                return
            module_name, _, attr = handler.rpartition(".")
            try:
                module = importlib.import_module(module_name)
                fn = getattr(module, attr)
                if not callable(fn):
                    raise TypeError(f"{handler} is not callable")
                function.fn = fn
            except Exception as exc:
                function.import_error = {
                    "errorMessage": f"Unable to import module '{module_name}': {exc}",
                    "errorType": "Runtime.ImportModuleError",
                    "stackTrace": [],
                }

    def _run(
        self, function: _Function, event: Any, context: LambdaContext
    ) -> tuple[bytes, str | None]:
        self._load(function)
        if function.import_error is not None:
            return json.dumps(function.import_error).encode(), "Unhandled"
        assert function.fn is not None
        try:
            result = function.fn(event, context)
            payload = json.dumps(result).encode()
        except Exception as exc:
            log.warning("function %s failed: %r", function.spec.name, exc)
            return json.dumps(_error_payload(exc, context.aws_request_id)).encode(), "Unhandled"
        if len(payload) > MAX_PAYLOAD_BYTES:
            error = {
                "errorMessage": f"Response payload size ({len(payload)} bytes) exceeded maximum "
                f"allowed payload size ({MAX_PAYLOAD_BYTES} bytes).",
                "errorType": "Function.ResponseSizeTooLarge",
            }
            return json.dumps(error).encode(), "Unhandled"
        return payload, None

    async def _invoke(self, request: Request) -> Response:
        name = request.path_params["name"]
        function = self._resolve(name)
        if function is None:
            return _aws_error(
                404,
                "ResourceNotFoundException",
                f"Function not found: {self.arn(name.split(':')[-1])}",
            )
        body = await request.body()
        if len(body) > MAX_PAYLOAD_BYTES:
            return _aws_error(
                413,
                "RequestTooLargeException",
                f"Request must be smaller than {MAX_PAYLOAD_BYTES} bytes for the "
                "InvokeFunction operation",
            )
        try:
            event = json.loads(body) if body else {}
        except ValueError as exc:
            return _aws_error(
                400, "InvalidRequestContentException", f"Could not parse request body: {exc}"
            )
        kind = request.headers.get("x-amz-invocation-type", "RequestResponse")
        if kind == "DryRun":
            return Response(status_code=204)
        spec = function.spec
        with function.lock:
            limit = spec.reserved_concurrency
            if limit is not None and function.running >= limit:
                return _aws_error(
                    429,
                    "TooManyRequestsException",
                    "Rate Exceeded.",
                    Reason="ReservedFunctionConcurrentInvocationLimitExceeded",
                )
            function.running += 1
            function.invocations += 1
        request_id = str(uuid.uuid4())
        started = time.monotonic()
        context = LambdaContext(spec, self.arn(spec.name), request_id, started + spec.timeout_s)
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._run, function, event, context)
        future.add_done_callback(lambda _: self._release(function))
        if kind == "Event":
            task = loop.create_task(self._drain(future))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
            return Response(status_code=202, headers={"x-amzn-RequestId": request_id})
        try:
            payload, error = await asyncio.wait_for(asyncio.shield(future), spec.timeout_s)
        except TimeoutError:
            payload = json.dumps(
                {
                    "errorMessage": f"RequestId: {request_id} Error: Task timed out after "
                    f"{spec.timeout_s:.2f} seconds",
                    "errorType": "Sandbox.Timedout",
                }
            ).encode()
            error = "Unhandled"
        duration_ms = (time.monotonic() - started) * 1000
        headers = {"x-amzn-RequestId": request_id, "X-Amz-Executed-Version": "$LATEST"}
        if error is not None:
            headers["X-Amz-Function-Error"] = error
        if request.headers.get("x-amz-log-type") == "Tail":
            lines = (
                f"START RequestId: {request_id} Version: $LATEST\n"
                f"END RequestId: {request_id}\n"
                f"REPORT RequestId: {request_id}\tDuration: {duration_ms:.2f} ms\t"
                f"Memory Size: {spec.memory_mb} MB\n"
            )
            tail = lines.encode()[-_LOG_TAIL_BYTES:]
            headers["X-Amz-Log-Result"] = base64.b64encode(tail).decode("ascii")
        return Response(payload, status_code=200, headers=headers, media_type="application/json")

    def _release(self, function: _Function) -> None:
        with function.lock:
            function.running -= 1

    async def _drain(self, future: asyncio.Future[tuple[bytes, str | None]]) -> None:
        with contextlib.suppress(Exception):
            await future


def main(argv: list[str] | None = None) -> int:
    """``python -m adapter.local.lambda_server [--port N]``: serve serverless.yml's functions."""
    parser = argparse.ArgumentParser(prog="python -m adapter.local.lambda_server")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument("--config", default=str(SERVERLESS_FILE), help="serverless.yml")
    parser.add_argument("--stage", default="dev")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    local = LocalLambda.from_serverless(args.config, stage=args.stage)

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        server = AsgiServer(local.app, port=args.port)
        url = await server.start()
        print(f"local Lambda endpoint at {url}: {', '.join(local.function_names)}", flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()
            await asyncio.to_thread(local.close)

    asyncio.run(serve())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
