"""Local alert receivers for tests: a Slack-compatible webhook and an SMTP server, on free ports.

The alerting tests point the ``slack_rankflow`` and ``smtp_rankflow`` connections at them
(:func:`slack_connection`, :func:`smtp_connection`: the JSON form of ``AIRFLOW_CONN_*``), in the
test process or in the environment of real Airflow processes.
"""

from __future__ import annotations

import email
import json
import socket
import socketserver
import threading
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WEBHOOK_SECRET = "T0RANK/B0FLOW/s3cr3tW3bh00kT0k3n"  # pragma: allowlist secret (a test's fake)


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Webhook:
    """A Slack-compatible incoming webhook: records each POSTed JSON body, answers ``status``."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.paths: list[str] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                receiver.paths.append(self.path)
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                answer = b"ok" if receiver.status == 200 else b"internal_error"
                self.send_response(receiver.status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/services/{WEBHOOK_SECRET}"
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def texts(self) -> str:
        """Every received body as one JSON string (for "the facts are shown" checks)."""
        return json.dumps(self.bodies)


class SmtpServer:
    """A minimal SMTP server (no TLS, no auth) that keeps every message it accepts."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        received = self.messages

        class Handler(socketserver.StreamRequestHandler):
            def reply(self, line: str) -> None:
                self.wfile.write(f"{line}\r\n".encode())

            def handle(self) -> None:
                self.reply("220 localhost rankflow test SMTP")
                while line := self.rfile.readline():
                    command = line.decode("utf-8", "replace").strip()
                    verb = command.split(" ", 1)[0].upper()
                    if verb in ("EHLO", "HELO"):
                        self.reply("250 localhost")
                    elif verb == "DATA":
                        self.reply("354 end data with <CR><LF>.<CR><LF>")
                        data = bytearray()
                        while (chunk := self.rfile.readline()) not in (b".\r\n", b""):
                            data += chunk[1:] if chunk.startswith(b"..") else chunk
                        received.append(email.message_from_bytes(bytes(data)))
                        self.reply("250 OK queued")
                    elif verb == "QUIT":
                        self.reply("221 bye")
                        return
                    elif verb in ("MAIL", "RCPT", "RSET", "NOOP"):
                        self.reply("250 OK")
                    else:
                        self.reply("502 command not implemented")

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    @staticmethod
    def text_of(message: Message) -> str:
        """Subject and decoded body parts of one message, as one string."""
        parts = [str(message["Subject"])]
        parts += [
            p.get_payload(decode=True).decode() for p in message.walk() if not p.is_multipart()
        ]
        return "\n".join(parts)

    def bodies(self) -> str:
        """Subject and decoded body parts of every message, as one string."""
        return "\n".join(self.text_of(message) for message in self.messages)


def slack_connection(url: str) -> str:
    return json.dumps({"conn_type": "slackwebhook", "password": url, "extra": {"timeout": 5}})


def smtp_connection(port: int) -> str:
    extra = {
        "disable_ssl": True,
        "disable_tls": True,
        "from_email": "rankflow@localhost",
        "to": "oncall@example.com",
        "retry_limit": 0,
        "timeout": 5,
    }
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})
