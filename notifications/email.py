"""Notification emails: the SMTP URL, a plain-text + HTML message, and sending it with smtplib."""

from __future__ import annotations

import html
import smtplib
import ssl
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from urllib.parse import parse_qs, unquote, urlsplit

from engineroom.models.notification import NotificationDocument
from engineroom.notifications.errors import DeliveryError, DeliveryRefused

#: Default ports per scheme.
_DEFAULT_PORTS = {"smtp": 25, "smtps": 465}


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    #: ``smtps://``: TLS from the first byte.
    implicit_tls: bool = False
    #: ``?starttls=true``: upgrade a plain connection before logging in.
    starttls: bool = False


def parse_smtp_url(url: str) -> SmtpServer:
    """``smtp://user:pass@host:port?starttls=true`` or ``smtps://…``.

    Raises:
      ValueError: another scheme, or no host.
    """
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError("ENGINEROOM_SMTP_URL must look like smtp://user:pass@host:port or smtps://…")
    starttls = parse_qs(parts.query).get("starttls", ["false"])[0].lower() in ("1", "true", "yes")
    return SmtpServer(
        host=parts.hostname,
        port=parts.port or _DEFAULT_PORTS[parts.scheme],
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        implicit_tls=parts.scheme == "smtps",
        starttls=starttls,
    )


def compose_email(notification: NotificationDocument, *, to: str, sender: str) -> EmailMessage:
    """A multipart/alternative message (plain text, then HTML) whose Message-ID derives from the notification,
    so a mail client can spot the (rare) repeat of an at-least-once delivery."""
    message = EmailMessage()
    message["Subject"] = f"[engineroom] {notification.title}"
    message["From"] = sender
    message["To"] = to
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(idstring=notification.id, domain="engineroom")
    message.set_content(_text_body(notification))
    message.add_alternative(_html_body(notification), subtype="html")
    return message


def _reference_lines(notification: NotificationDocument) -> list[tuple[str, str]]:
    lines = [("Event", str(notification.event_type)), ("At", notification.created_at.isoformat())]
    if notification.job_id is not None:
        lines.append(("Job", notification.job_id))
    if notification.workflow_id is not None:
        lines.append(("Workflow", notification.workflow_id))
    return lines


def _text_body(notification: NotificationDocument) -> str:
    details = "\n".join(f"{name}: {value}" for name, value in _reference_lines(notification))
    return f"{notification.message}\n\n{details}\n"


def _html_body(notification: NotificationDocument) -> str:
    rows = "".join(
        f"<tr><th align='left'>{html.escape(name)}</th><td>{html.escape(value)}</td></tr>"
        for name, value in _reference_lines(notification)
    )
    return (
        f"<html><body><h2>{html.escape(notification.title)}</h2>"
        f"<p>{html.escape(notification.message)}</p><table>{rows}</table></body></html>"
    )


def send_email(server: SmtpServer, message: EmailMessage, *, timeout_s: float) -> None:
    """Hand the message to the SMTP server.

    Raises:
      DeliveryRefused: the server refused the recipient, sender or message for good (5xx), or the login.
      DeliveryError: anything a later attempt may cure (4xx, connection refused, timeout).
    """
    try:
        with _connect(server, timeout_s) as smtp:
            if server.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if server.username is not None:
                smtp.login(server.username, server.password or "")
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _reason in exc.recipients.values()]
        raise _smtp_failure(f"recipient refused: {exc.recipients}", codes[0] if codes else None) from exc
    except smtplib.SMTPResponseException as exc:
        raise _smtp_failure(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", exc.smtp_code) from exc
    except (smtplib.SMTPException, OSError) as exc:
        raise DeliveryError(f"SMTP server unreachable or failing: {exc!r}") from exc


def _connect(server: SmtpServer, timeout_s: float) -> smtplib.SMTP:
    if server.implicit_tls:
        return smtplib.SMTP_SSL(server.host, server.port, timeout=timeout_s, context=ssl.create_default_context())
    return smtplib.SMTP(server.host, server.port, timeout=timeout_s)


def _smtp_failure(detail: str, code: int | None) -> DeliveryError:
    """5xx replies are permanent (RFC 5321 §4.2.1); 4xx are worth another try."""
    if code is not None and 500 <= code < 600:
        return DeliveryRefused(detail, status=code)
    return DeliveryError(detail, status=code)
