"""TLS and mutual TLS from configuration: gRPC credentials and ssl contexts for the HTTP API."""

from __future__ import annotations

import ssl
from pathlib import Path

import grpc

from services.common.settings import ClientTlsConfig, ServerTlsConfig


class TlsSetupError(Exception):
    """A certificate or key cannot be used; the message names the setting and the file."""


def _read(setting: str, path: str) -> bytes:
    if not path:
        raise TlsSetupError(f"{setting} is empty")
    file = Path(path)
    try:
        return file.read_bytes()
    except OSError as exc:
        raise TlsSetupError(f"{setting} {file}: {exc.strerror}") from None


def server_credentials(cfg: ServerTlsConfig, section: str = "tls") -> grpc.ServerCredentials:
    """gRPC server credentials; with `client_ca_file`, clients without a certificate it signed are refused.

    Args:
        cfg: The service's `tls` setting.
        section: The setting's path in the configuration, for error messages (e.g. "cache.tls").
    """
    key = _read(f"{section}.key_file", cfg.key_file)
    chain = _read(f"{section}.cert_file", cfg.cert_file)
    if not cfg.client_ca_file:
        return grpc.ssl_server_credentials([(key, chain)])
    ca = _read(f"{section}.client_ca_file", cfg.client_ca_file)
    return grpc.ssl_server_credentials([(key, chain)], root_certificates=ca, require_client_auth=True)


def channel_credentials(cfg: ClientTlsConfig, section: str = "peer_tls") -> grpc.ChannelCredentials:
    """gRPC channel credentials: the peers' CA and, for mutual TLS, this process's certificate."""
    ca = _read(f"{section}.ca_file", cfg.ca_file) if cfg.ca_file else None
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise TlsSetupError(f"{section}.cert_file and {section}.key_file go together")
    key = _read(f"{section}.key_file", cfg.key_file) if cfg.key_file else None
    chain = _read(f"{section}.cert_file", cfg.cert_file) if cfg.cert_file else None
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=chain)


def channel_options(cfg: ClientTlsConfig) -> list[tuple[str, str]]:
    """Channel options for TLS (the expected server name, when it is not the dialled host)."""
    return [("grpc.ssl_target_name_override", cfg.server_name)] if cfg.server_name else []


def server_ssl_context(cfg: ServerTlsConfig, section: str = "tls") -> ssl.SSLContext:
    """An ssl context for an aiohttp server (the router's HTTP API), TLS 1.2 or newer."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"{section}.cert_file/key_file: {exc}") from None
    if cfg.client_ca_file:
        try:
            context.load_verify_locations(cafile=cfg.client_ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(f"{section}.client_ca_file {cfg.client_ca_file}: {exc}") from None
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_ssl_context(cfg: ClientTlsConfig) -> ssl.SSLContext:
    """An ssl context for an HTTP client of a Corral service (tests, tools)."""
    context = ssl.create_default_context(cafile=cfg.ca_file or None)
    if cfg.cert_file:
        context.load_cert_chain(cfg.cert_file, cfg.key_file or None)
    return context


def check_server(cfg: ServerTlsConfig, section: str = "tls") -> None:
    """Reads every file once so that a bad path fails at start-up with one clear line."""
    server_ssl_context(cfg, section)
    server_credentials(cfg, section)
