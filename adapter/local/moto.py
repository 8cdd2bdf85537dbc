"""A local DynamoDB: moto's server on a loopback port, with Kafka Ingress's tables created.

Used by ``make dev`` and the integration tests. Clients talk to it over real HTTP with real
boto3, exactly as they would talk to DynamoDB.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
from types import TracebackType

from adapter.errors import LocalStackError

__all__ = ["MotoServer", "fake_aws_credentials", "main"]


def fake_aws_credentials() -> None:
    """moto accepts any credentials, but boto3 refuses to sign without some."""
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


class MotoServer:
    """moto's ThreadedMotoServer on 127.0.0.1 and a free (or given) port."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._host = host
        self._port = port
        self._server: object | None = None
        self.endpoint_url = ""

    def start(self) -> str:
        from moto.server import ThreadedMotoServer

        fake_aws_credentials()
        # werkzeug logs every request at INFO: thousands of lines per test, none useful.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = ThreadedMotoServer(ip_address=self._host, port=self._port, verbose=False)
        try:
            server.start()
        except OSError as exc:
            raise LocalStackError(
                f"moto server cannot listen on {self._host}:{self._port}: {exc}"
            ) from exc
        host, port = server.get_host_and_port()
        # Remember the port so a restart (outage tests) comes back on the same address.
        self._port = port
        self._server = server
        self.endpoint_url = f"http://{host}:{port}"
        return self.endpoint_url

    def create_kms_key(self, description: str = "kafka-ingress secrets") -> str:
        """A new symmetric KMS key in this server; its ARN (for ``[secrets] kms-key-id``)."""
        import boto3

        kms = boto3.client("kms", endpoint_url=self.endpoint_url, region_name="us-east-1")
        try:
            return str(kms.create_key(Description=description)["KeyMetadata"]["Arn"])
        finally:
            kms.close()

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.stop()  # type: ignore[attr-defined]

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    """``python -m adapter.local.moto``: serve DynamoDB on a port until SIGINT/SIGTERM."""
    from adapter.store.dynamo import make_client
    from adapter.store.tables import TableNames, create_tables

    parser = argparse.ArgumentParser(prog="python -m adapter.local.moto")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--table-prefix", default="kafka-ingress-")
    args = parser.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with MotoServer(port=args.port) as server:
        create_tables(make_client(server.endpoint_url, "us-east-1"), TableNames(args.table_prefix))
        print(f"moto DynamoDB at {server.endpoint_url}", flush=True)
        stop.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
