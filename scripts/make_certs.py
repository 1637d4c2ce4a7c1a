"""Creates a local CA, server and client certificates for TLS and mutual TLS tests (`make certs`)."""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / ".state" / "certs"
# NOTE: one server certificate for every service: the names they have on one machine, in
# docker-compose and in the Kubernetes example (service names in the `corral` namespace).
SERVER_NAMES = (
    "localhost",
    "router",
    "cache",
    "health",
    "prewarm",
    "router.corral.svc",
    "cache.corral.svc",
    "health.corral.svc",
    "prewarm.corral.svc",
)
SERVER_IPS = ("127.0.0.1", "::1")
CLIENT_NAMES = ("corral-router", "corral-prewarm", "corral-cli", "client")


@dataclass(frozen=True)
class Issued:
    """A certificate and its key as PEM files."""

    cert_file: Path
    key_file: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.write_bytes(data)
    if private:
        path.chmod(0o600)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Corral local CA"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def make_ca(out: Path, days: int) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed CA (ca.pem, ca-key.pem)."""
    key = _key()
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Corral local CA"))
        .issuer_name(_name("Corral local CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    _write(out / "ca.pem", cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca-key.pem", _key_pem(key), private=True)
    return cert, key


def issue(
    out: Path,
    stem: str,
    common_name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    *,
    server: bool,
    days: int,
    dns_names: tuple[str, ...] = (),
    ips: tuple[str, ...] = (),
) -> Issued:
    """A leaf certificate signed by the CA (<stem>.pem, <stem>-key.pem)."""
    ca_cert, ca_key = ca
    key = _key()
    now = dt.datetime.now(dt.UTC)
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
    )
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    if not sans:
        sans = [x509.DNSName(common_name)]
    builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    issued = Issued(out / f"{stem}.pem", out / f"{stem}-key.pem")
    _write(issued.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    _write(issued.key_file, _key_pem(key), private=True)
    return issued


def make_all(out: Path, days: int = 30) -> dict[str, Issued]:
    """The CA, one server certificate for every service and client certificates; returns them by stem."""
    out.mkdir(parents=True, exist_ok=True)
    ca = make_ca(out, days)
    issued = {
        "server": issue(
            out, "server", "corral-server", ca, server=True, days=days, dns_names=SERVER_NAMES, ips=SERVER_IPS
        )
    }
    for name in CLIENT_NAMES:
        issued[name] = issue(out, name, name, ca, server=False, days=days)
    return issued


def main(argv: list[str] | None = None) -> int:
    """Command line: `python -m scripts.make_certs [--out DIR] [--days N]`."""
    parser = argparse.ArgumentParser(prog="make_certs", description=__doc__)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default .state/certs)")
    parser.add_argument("--days", type=int, default=30, help="validity in days (default 30)")
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days: must be at least 1")
    issued = make_all(args.out, args.days)
    print(f"CA      {args.out / 'ca.pem'}")
    for stem, files in issued.items():
        print(f"{stem:<15} {files.cert_file}  {files.key_file}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
