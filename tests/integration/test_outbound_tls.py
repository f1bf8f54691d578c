"""HTTPS through the guard: the socket goes to the checked address, while SNI and certificate checks use the name."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from app.outbound import OutboundClient, OutboundConnectError


def _self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


class TlsServer:
    def __init__(self) -> None:
        self.sni: list[str | None] = []
        self.hosts: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        self.hosts += [line.lower() for line in head.split(b"\r\n") if line.lower().startswith(b"host:")]
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")
        await writer.drain()
        writer.close()


@pytest.fixture
async def tls(tmp_path: Path) -> AsyncIterator[tuple[TlsServer, int, Path]]:
    cert, key = _self_signed("seller.invalid", tmp_path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    server = TlsServer()
    context.sni_callback = lambda _sock, name, _ctx: server.sni.append(name)  # type: ignore[func-returns-value]
    listening = await asyncio.start_server(server.handle, "127.0.0.1", 0, ssl=context)
    try:
        yield server, listening.sockets[0].getsockname()[1], cert
    finally:
        listening.close()


async def _to_loopback(host: str, port: int) -> Sequence[str]:
    return ["127.0.0.1"]  # every name: the certificate, not the address, must decide


async def test_https_uses_the_name_for_sni_and_verification(tls: tuple[TlsServer, int, Path]) -> None:
    server, port, cert = tls
    trusting = ssl.create_default_context(cafile=str(cert))
    async with OutboundClient(allow_private=True, resolver=_to_loopback, ssl_context=trusting) as client:
        answer = await client.request(f"https://seller.invalid:{port}/run", idempotency_key="k", json={})
        assert (answer.status, answer.json(), answer.peer) == (200, {"ok": True}, f"127.0.0.1:{port}")
        assert server.sni == ["seller.invalid"] and server.hosts == [f"host: seller.invalid:{port}".encode()]
        # Same address, another name: the certificate does not cover it, so no request is sent.
        with pytest.raises(OutboundConnectError, match=r"CERTIFICATE_VERIFY_FAILED|match"):
            await client.request(f"https://other.invalid:{port}/run", idempotency_key="k", json={})
    assert len(server.hosts) == 1


async def test_an_untrusted_certificate_is_a_connect_error(tls: tuple[TlsServer, int, Path]) -> None:
    _server, port, _cert = tls
    async with OutboundClient(allow_private=True, resolver=_to_loopback) as client:  # system trust store only
        with pytest.raises(OutboundConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await client.request(f"https://seller.invalid:{port}/run", idempotency_key="k", json={})
