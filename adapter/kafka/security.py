"""The I/O shell around :class:`~adapter.kafka.options.SecuritySettings`.

:mod:`adapter.kafka.options` decides *what* the security settings are without touching a
file; this module reads the certificate files and produces aiokafka's arguments:
``security_protocol``, ``ssl_context``, ``sasl_mechanism``, ``sasl_plain_username``,
``sasl_plain_password`` and ``sasl_oauth_token_provider``.

Every file or TLS problem becomes a :class:`~adapter.errors.ConfigError` naming the librdkafka
option to fix (``ssl.ca.location`` …), never an ``ssl.SSLError`` or ``OSError`` with a bare
path. OAUTHBEARER tokens come from an ``aiokafka.abc.AbstractTokenProvider`` the caller passes
in, which is where an OIDC client-credentials provider plugs in.
"""

from __future__ import annotations

import os
import ssl
from typing import Any

from aiokafka.abc import AbstractTokenProvider

from adapter.errors import ConfigError
from adapter.kafka.options import SecuritySettings

__all__ = ["build_ssl_context", "consumer_security_kwargs"]

# librdkafka's spelling for "use the system's default CA locations".
_PROBE = "probe"


class _NeedsPassword(Exception):
    """Raised from the password callback: the key is encrypted and no password was given."""


def _refuse_prompt() -> str:
    # Without a callback OpenSSL would prompt on the terminal for the passphrase, which a
    # long-lived poller must never do.
    raise _NeedsPassword


def _check_readable(option: str, path: str) -> None:
    if not os.path.exists(path):
        raise ConfigError(f"option {option!r}: no such file or directory: {path!r}")
    if not os.access(path, os.R_OK):
        raise ConfigError(f"option {option!r}: not readable: {path!r}")


def build_ssl_context(security: SecuritySettings) -> ssl.SSLContext | None:
    """A client TLS context for ``security``, or ``None`` when the protocol uses no TLS.

    Raises :class:`ConfigError` naming the option whose file is missing, unreadable or not
    valid PEM, or whose key does not match the certificate.
    """
    if not security.uses_ssl:
        return None
    cafile = capath = None
    location = security.ssl_ca_location
    if location is not None and location != _PROBE:
        _check_readable("ssl.ca.location", location)
        if os.path.isdir(location):
            capath = location
        else:
            cafile = location
    try:
        # Without a CA option this loads the system's trust store, as librdkafka's probe does.
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=cafile, capath=capath)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"option 'ssl.ca.location': cannot load CA certificates from {location!r} ({exc})"
        ) from exc
    if security.ssl_ca_pem is not None:
        try:
            context.load_verify_locations(cadata=security.ssl_ca_pem)
        except (ssl.SSLError, ValueError) as exc:
            raise ConfigError(f"option 'ssl.ca.pem': not a PEM CA certificate ({exc})") from exc

    if security.ssl_certificate_location is not None:
        _load_client_certificate(context, security)

    # check_hostname has to be off before verification can be turned off.
    context.check_hostname = security.ssl_verify and security.ssl_check_hostname
    context.verify_mode = ssl.CERT_REQUIRED if security.ssl_verify else ssl.CERT_NONE
    return context


def _load_client_certificate(context: ssl.SSLContext, security: SecuritySettings) -> None:
    certfile = security.ssl_certificate_location
    keyfile = security.ssl_key_location
    assert certfile is not None
    _check_readable("ssl.certificate.location", certfile)
    if keyfile is not None:
        _check_readable("ssl.key.location", keyfile)
    # Parse the certificate on its own first, so a bad certificate is not blamed on the key.
    try:
        ssl.create_default_context(cafile=certfile)
    except ssl.SSLError as exc:
        raise ConfigError(
            f"option 'ssl.certificate.location': no PEM certificate in {certfile!r}"
        ) from exc
    key_option = "ssl.key.location" if keyfile is not None else "ssl.certificate.location"
    password = security.ssl_key_password
    try:
        context.load_cert_chain(
            certfile, keyfile, password if password is not None else _refuse_prompt
        )
    except _NeedsPassword:
        raise ConfigError(
            f"option {key_option!r}: the private key is encrypted; set 'ssl.key.password'"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise ConfigError(
                f"option {key_option!r}: the private key does not match the certificate in "
                "'ssl.certificate.location'"
            ) from None
        hint = " or 'ssl.key.password' is wrong" if password is not None else ""
        # No chaining: OpenSSL's message is uninformative, and the password must stay out.
        raise ConfigError(
            f"option {key_option!r}: cannot load the private key: not a PEM private key{hint}"
        ) from None


def consumer_security_kwargs(
    security: SecuritySettings,
    token_provider: AbstractTokenProvider | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> dict[str, Any]:
    """aiokafka's security arguments (consumer and producer alike) for ``security``.

    ``token_provider`` serves OAUTHBEARER tokens and is required for that mechanism.
    ``ssl_context`` reuses a context already built with :func:`build_ssl_context`.
    """
    kwargs: dict[str, Any] = {"security_protocol": security.protocol}
    if security.uses_ssl:
        kwargs["ssl_context"] = ssl_context or build_ssl_context(security)
    if not security.uses_sasl:
        return kwargs
    mechanism = security.sasl_mechanism
    if mechanism is None:
        raise ConfigError(f"security.protocol={security.protocol} needs sasl.mechanism")
    kwargs["sasl_mechanism"] = mechanism
    if mechanism == "OAUTHBEARER":
        if token_provider is None:
            raise ConfigError(
                "sasl.mechanism=OAUTHBEARER needs a token provider "
                "(sasl.oauthbearer.method=oidc with its client ID, secret and token endpoint)"
            )
        kwargs["sasl_oauth_token_provider"] = token_provider
        return kwargs
    if security.sasl_username is None or security.sasl_password is None:
        raise ConfigError(f"sasl.mechanism={mechanism} needs sasl.username and sasl.password")
    kwargs["sasl_plain_username"] = security.sasl_username
    kwargs["sasl_plain_password"] = security.sasl_password
    return kwargs
