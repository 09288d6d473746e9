"""Opt-in security for a served model: TLS (a server certificate, optionally client
certificates) on gRPC and REST, and a bearer token every request must carry.

Without either, the server binds 127.0.0.1 by default; binding another address without them
is allowed (a trusted network, a proxy in front) but warned about.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import ssl
from dataclasses import dataclass

import grpc

# The gRPC metadata key and HTTP header that carry the token ("Bearer <token>").
AUTHORIZATION = "authorization"


@dataclass
class Security:
    """How clients must connect.

    Attributes:
        token: every request must send `Authorization: Bearer <token>` (gRPC metadata
            `authorization`); None turns authentication off.
        cert_file: the server's PEM certificate chain; with `key_file`, serves TLS.
        key_file: the server's PEM private key.
        client_ca_file: PEM certificates of the authorities that sign client certificates;
            when set, a client must present one (mutual TLS).

    Example:

    >>> Security(token="s3cret").authorized("Bearer s3cret")
    True
    >>> Security(token="s3cret").authorized("Bearer guess")
    False
    """

    token: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    client_ca_file: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not str(self.token).strip():
            raise ValueError("auth_token: empty; leave it unset to turn authentication off")
        if bool(self.cert_file) != bool(self.key_file):
            raise ValueError("tls_cert_file and tls_key_file: give both, or neither")
        if self.client_ca_file and not self.cert_file:
            raise ValueError("tls_client_ca_file needs tls_cert_file and tls_key_file")
        for key, path in (
            ("tls_cert_file", self.cert_file),
            ("tls_key_file", self.key_file),
            ("tls_client_ca_file", self.client_ca_file),
        ):
            if path and not os.path.isfile(path):
                raise ValueError(f"{key}: no such file: {path}")

    @property
    def tls(self) -> bool:
        return bool(self.cert_file)

    def authorized(self, header: str | None) -> bool:
        """Whether an `Authorization` value carries the token (always, with no token set)."""
        if self.token is None:
            return True
        if not header or not header.startswith("Bearer "):
            return False
        return hmac.compare_digest(header[len("Bearer ") :].encode(), str(self.token).encode())

    def ssl_context(self) -> ssl.SSLContext | None:
        """The REST server's TLS context, or None without TLS."""
        if not self.tls:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert_file, self.key_file)
        if self.client_ca_file:
            context.load_verify_locations(self.client_ca_file)
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        """The gRPC server's TLS credentials, or None without TLS."""
        if not self.tls:
            return None
        with open(self.cert_file, "rb") as f:
            chain = f.read()
        with open(self.key_file, "rb") as f:
            key = f.read()
        roots = None
        if self.client_ca_file:
            with open(self.client_ca_file, "rb") as f:
                roots = f.read()
        return grpc.ssl_server_credentials(
            [(key, chain)], root_certificates=roots, require_client_auth=roots is not None
        )

    def interceptors(self) -> list[grpc.ServerInterceptor]:
        return [TokenInterceptor(self)] if self.token is not None else []


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses gRPC calls without the bearer token (UNAUTHENTICATED), before any handler runs."""

    def __init__(self, security: Security):
        self.security = security

        def refuse(request, context):
            context.abort(
                grpc.StatusCode.UNAUTHENTICATED,
                "missing or wrong bearer token (metadata 'authorization: Bearer <token>')",
            )

        self._refusal = grpc.unary_unary_rpc_method_handler(refuse)

    def intercept_service(self, continuation, handler_call_details):
        metadata = dict(handler_call_details.invocation_metadata or ())
        if self.security.authorized(metadata.get(AUTHORIZATION)):
            return continuation(handler_call_details)
        return self._refusal


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_warning(host: str, security: Security) -> str | None:
    """A warning for binding a non-loopback address with neither TLS nor a token, or None."""
    if is_loopback(host) or security.tls or security.token is not None:
        return None
    return (
        f"serving on {host} without TLS or a token: anyone who can reach this address can "
        "query the models and read their signatures; set tls_cert_file/tls_key_file and "
        "auth_token (serving/README.md), or bind 127.0.0.1"
    )
