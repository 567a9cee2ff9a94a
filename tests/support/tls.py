"""Throwaway TLS material for the tests: a CA of their own and a server certificate it signed, made with
`cryptography` at run time (nothing secret is committed, nothing outlives the test's temporary directory).

    pki = make_pki(tmp_path)          # PEM files under tmp_path
    pki.certfile, pki.keyfile         # the server's chain (leaf + CA) and its key (unencrypted, mode 0600)
    pki.ca_file                       # what clients trust: ssl.create_default_context(cafile=pki.ca_file)
    pki.client_context()              # such a context, optionally pinned to TLS versions

The server certificate names 127.0.0.1 (SAN IP) and localhost (SAN DNS), is valid from an hour ago for a day, and
is a proper leaf (basicConstraints CA:FALSE, serverAuth, keyUsage digitalSignature + keyEncipherment) so OpenSSL's
default verification, Python's ssl and nginx all accept it as they would a real one.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Pki:
    ca_file: Path  # the CA certificate (PEM): the only thing clients need
    certfile: Path  # the server's chain: its certificate, then the CA's
    keyfile: Path  # the server's private key (PEM, PKCS#8, unencrypted)
    leaf_file: Path  # the server's certificate alone

    def client_context(self, minimum: ssl.TLSVersion | None = None,
                       maximum: ssl.TLSVersion | None = None, *, ciphers: str | None = None) -> ssl.SSLContext:
        """A client context verifying against the test CA (hostname checked), optionally pinned to versions."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if ciphers is not None:  # before the versions: a lower security level is what lets old versions be set
            context.set_ciphers(ciphers)
        if minimum is not None:
            context.minimum_version = minimum
        if maximum is not None:
            context.maximum_version = maximum
        return context


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fhir-scribe tests"),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def make_pki(directory: Path, *, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
             valid_for: datetime.timedelta = datetime.timedelta(days=1)) -> Pki:
    """A new CA and a server certificate for `hosts` (IP addresses become SAN IPs, names SAN DNS names)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.timezone.utc)
    not_before, not_after = now - datetime.timedelta(hours=1), now + valid_for

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("fhir-scribe test CA")
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0])).issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before).not_valid_after(not_after)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pem = serialization.Encoding.PEM
    ca_file, leaf_file = directory / "ca.pem", directory / "server.pem"
    certfile, keyfile = directory / "server-chain.pem", directory / "server.key"
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    leaf_file.write_bytes(leaf.public_bytes(pem))
    certfile.write_bytes(leaf.public_bytes(pem) + ca_cert.public_bytes(pem))
    _write_private(keyfile, key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))
    return Pki(ca_file=ca_file, certfile=certfile, keyfile=keyfile, leaf_file=leaf_file)
