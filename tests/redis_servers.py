"""A redis-server of a test's own: its own port and folder, killable, with chosen settings."""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from rankflow.ops.local_secrets import user_url
from rankflow.store.acl import Credentials, acl_file_text
from rankflow.store.client import redis_client

NAMES = ("writer", "reader", "admin", "logger")


@dataclass(frozen=True)
class TlsFiles:
    """A CA and a server certificate it signed for 127.0.0.1, as PEM files."""

    ca: Path
    cert: Path
    key: Path


def make_tls_files(folder: Path) -> TlsFiles:
    """Write a throwaway CA and a server certificate for 127.0.0.1/localhost (one day valid)."""
    import ipaddress
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.now(UTC)

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5)).not_valid_after(now + timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )  # fmt: skip
        if not ca:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = (
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP256R1()),
    )
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rankflow test CA")])
    ca_cert = certificate("rankflow test CA", ca_key, ca_name, ca_key, ca=True)
    server_cert = certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    files = TlsFiles(folder / "ca.pem", folder / "server.pem", folder / "server.key")
    files.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def free_port() -> int:
    """A TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server started with ``options`` (e.g. ``--maxmemory 8mb``).

    With ``acl=True`` it runs with rankflow's ACL users (prefix ``rf``) and no default user:
    ``url`` is the writer's, ``reader_url``, ``admin_url`` and ``logger_url`` the others'. With
    ``tls`` (a :class:`TlsFiles`) it speaks TLS only and the URLs are ``rediss://…?ssl_ca_certs=…``.
    """

    def __init__(
        self, folder: Path, *options: str, acl: bool = False, tls: TlsFiles | None = None
    ) -> None:
        self.folder = folder
        self.port = free_port()
        base = f"redis://127.0.0.1:{self.port}/0"
        if tls is not None:
            base = f"rediss://127.0.0.1:{self.port}/0?ssl_ca_certs={tls.ca}"
            options = (
                *options, "--port", "0", "--tls-port", str(self.port),
                "--tls-cert-file", str(tls.cert), "--tls-key-file", str(tls.key),
                "--tls-ca-cert-file", str(tls.ca), "--tls-auth-clients", "no",
            )  # fmt: skip
        self.options = options
        self.url = self.reader_url = self.admin_url = self.logger_url = base
        if acl:
            users = {name: Credentials(name, secrets.token_urlsafe(12)) for name in NAMES}
            self.url, self.reader_url, self.admin_url, self.logger_url = (
                user_url(base, user.username, user.password) for user in users.values()
            )
            acl_file = folder.parent / f"{folder.name}-users.acl"
            folder.parent.mkdir(parents=True, exist_ok=True)
            acl_file.write_text(acl_file_text("rf", **users))
            self.options = (*options, "--aclfile", str(acl_file))
        self.process: subprocess.Popen[bytes] | None = None
        self.kills = 0

    def start(self) -> RedisServer:
        """Start (or restart, on its own files) the server and wait until it answers."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [
            shutil.which("redis-server") or "redis-server",
            "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder),
            "--save", "", *self.options,  # a later --port (TLS: 0) wins
        ]  # fmt: skip
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with redis_client(self.admin_url, socket_timeout=1) as client:
                    if client.ping():
                        return self
            except Exception:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server {' '.join(self.options)} did not start")

    def kill(self) -> None:
        """SIGKILL the server (no shutdown, no last fsync) and start it again."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        self.kills += 1
        self.start()

    def stop(self) -> None:
        """Stop the server for good."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
