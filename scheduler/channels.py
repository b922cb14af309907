"""Notification channels: a signed JSON webhook and e-mail over SMTP with STARTTLS.

Imported only when `[notify]` configures a channel. TLS always verifies the peer (the system's
CA store, or `[notify] ca_file`); secrets are read from a file or an environment variable and
never appear in an error or a log line (errors name the host, never the URL's path or query).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import smtplib
import ssl
import urllib.error
import urllib.request
from email import policy
from email.message import EmailMessage
from pathlib import Path
from typing import Mapping, Protocol
from urllib.parse import urlsplit

from core.errors import PipelineError
from core.logs import printable
from core.settings import NotifySettings

SIGNATURE_HEADER = "X-Compressor-AD-Signature"  # "sha256=" + hex HMAC-SHA256 of the raw body
KEY_HEADER = "Idempotency-Key"


_UNFOLDED = policy.SMTP.clone(max_line_length=998)  # the 64-character idempotency key stays on its header's line


class DeliveryError(Exception):
    """One delivery attempt failed (receiver down, refused, timed out): worth retrying."""


class PermanentDeliveryError(DeliveryError):
    """A try that another try seconds later would fail the same way (login refused, TLS or certificate
    refused): not retried within the send; the outbox's own backoff tries the row again on a later pass."""


def _tls_refused(exc: BaseException) -> bool:
    """A TLS failure that repeats on every try: an untrusted certificate, a wrong host name, no common
    protocol or cipher. Not a connection cut during the handshake (SSLEOFError), which a retry can mend."""
    return isinstance(exc, ssl.SSLError) and not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError))


class Channel(Protocol):
    name: str

    def send(self, key: str, payload: str) -> None: ...


def read_secret(path: str, env_name: str, what: str, env: Mapping[str, str] | None = None) -> str:
    """The secret in `path`, else in $env_name; PipelineError saying where to put it."""
    env = os.environ if env is None else env
    if path:
        try:
            secret = Path(path).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise PipelineError(f"cannot read the {what} file {path}: {exc.strerror}") from None
    else:
        secret = env.get(env_name, "").strip()
    if not secret:
        raise PipelineError(f"the {what} is empty: put it in the file named by the setting or in ${env_name}")
    return secret


def tls_context(ca_file: str) -> ssl.SSLContext:
    """Peer verification and host name check on; `ca_file` adds trusted CAs (else the system's)."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise PipelineError(f"[notify] ca_file {ca_file}: {exc}") from None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *_args, **_kwargs):  # a signed POST is never replayed elsewhere
        return None


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class Webhook:
    """JSON POST with the idempotency key and an HMAC-SHA256 signature of the body; 2xx = delivered."""

    name = "webhook"

    def __init__(self, url: str, secret: str, timeout_s: float, context: ssl.SSLContext) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.host = urlsplit(url).netloc.rpartition("@")[2]
        self._secret = secret.encode("utf-8")
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=context), _NoRedirect())

    def send(self, key: str, payload: str) -> None:
        body = payload.encode("utf-8")
        headers = {"Content-Type": "application/json", KEY_HEADER: key, SIGNATURE_HEADER: signature(self._secret, body), "User-Agent": "compressor-ad"}
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                response.read()
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"webhook {self.host}: HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", None) or exc
            error = PermanentDeliveryError if _tls_refused(reason) else DeliveryError
            raise error(f"webhook {self.host}: {printable(reason, 200)}") from None


class Email:
    """One message per notification over SMTP: STARTTLS (required), then login when a user is set."""

    name = "email"

    def __init__(self, notify: NotifySettings, password: str | None, context: ssl.SSLContext) -> None:
        self.notify, self._password, self.context = notify, password, context

    def message(self, key: str, payload: str) -> EmailMessage:
        data = json.loads(payload)
        kind = data["event"].rsplit("_", 1)[-1]
        msg = EmailMessage(policy=_UNFOLDED)
        msg["Subject"] = printable(f"[compressor-ad] alert {kind}: compressor {data['compressor_id']} ({data['top_signals'] or 'no signals'})", 200)
        msg["From"], msg["To"] = self.notify.email_from, ", ".join(self.notify.email_to)
        msg["Message-ID"] = f"<{key}@compressor-ad>"
        msg[KEY_HEADER] = key
        lines = [f"{name}: {data[name]}" for name in ("compressor_id", "start_time", "end_time", "peak_score", "peak_at", "threshold", "top_signals", "model_version")]
        msg.set_content("\n".join(printable(line, 500) for line in lines) + "\n\nAcknowledge: run_scheduler.py alerts list, then alerts ack ID --by NAME\n")
        return msg

    def send(self, key: str, payload: str) -> None:
        n = self.notify
        try:
            with smtplib.SMTP(n.smtp_host, n.smtp_port, timeout=n.smtp_timeout_s) as smtp:
                smtp.starttls(context=self.context)
                if n.smtp_username:
                    smtp.login(n.smtp_username, self._password or "")
                smtp.send_message(self.message(key, payload))
        except smtplib.SMTPAuthenticationError as exc:
            reply = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
            raise PermanentDeliveryError(
                f"smtp {n.smtp_host}:{n.smtp_port}: login as {printable(n.smtp_username, 100)} refused ({exc.smtp_code} {printable(reply, 200)}): "
                f"check smtp_username and the password (smtp_password_file or ${n.smtp_password_env})"
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            detail = str(exc).splitlines()[0] if str(exc) else ""
            error = PermanentDeliveryError if _tls_refused(exc) else DeliveryError
            raise error(f"smtp {n.smtp_host}:{n.smtp_port}: {type(exc).__name__} {printable(detail, 200)}".rstrip()) from None


def build_channels(notify: NotifySettings) -> dict[str, Channel]:
    """The configured channels by name, their secrets read now (PipelineError when one is missing)."""
    context = tls_context(notify.ca_file)
    channels: dict[str, Channel] = {}
    if notify.webhook_url:
        secret = read_secret(notify.webhook_secret_file, notify.webhook_secret_env, "webhook secret")
        channels["webhook"] = Webhook(notify.webhook_url, secret, notify.webhook_timeout_s, context)
    if notify.smtp_host:
        password = read_secret(notify.smtp_password_file, notify.smtp_password_env, "SMTP password") if notify.smtp_username else None
        channels["email"] = Email(notify, password, context)
    return channels
