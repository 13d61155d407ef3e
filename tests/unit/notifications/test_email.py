"""Notification emails: the SMTP URL and the message's parts."""

from __future__ import annotations

import pytest

from engineroom.core.clock import utcnow
from engineroom.models.notification import NotifiableEvent, NotificationChannel, NotificationDocument
from engineroom.notifications.email import SmtpServer, compose_email, parse_smtp_url


def test_smtp_urls_carry_credentials_port_and_starttls() -> None:
    assert parse_smtp_url("smtp://user:p%40ss@127.0.0.1:2525?starttls=true") == SmtpServer(
        host="127.0.0.1", port=2525, username="user", password="p@ss", starttls=True
    )
    assert parse_smtp_url("smtps://mail.example.com") == SmtpServer(
        host="mail.example.com", port=465, implicit_tls=True
    )


@pytest.mark.parametrize("url", ["http://mail.example.com", "smtp://", "mail.example.com:25"])
def test_other_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="ENGINEROOM_SMTP_URL"):
        parse_smtp_url(url)


def test_the_email_has_a_text_and_an_escaped_html_part() -> None:
    notification = NotificationDocument(
        id="01HZZZZZZZZZZZZZZZZZZZZZZZ",
        tenant_id="acme",
        user_id="alice",
        event_type=NotifiableEvent.JOB_FAILED,
        title="Job general.demo failed",
        message="Job 01J (general.demo) failed. ValueError: <script>",
        job_id="01J",
        channels=[NotificationChannel.EMAIL],
        created_at=utcnow(),
        created_event_id="01E",
    )
    message = compose_email(notification, to="alice@example.com", sender="engineroom@example.com")
    assert message["Subject"] == "[engineroom] Job general.demo failed" and message["To"] == "alice@example.com"
    assert message.get_content_type() == "multipart/alternative"
    text, html = message.get_body(("plain",)), message.get_body(("html",))
    assert text is not None and "ValueError: <script>" in text.get_content()
    assert html is not None and "&lt;script&gt;" in html.get_content() and "<script>" not in html.get_content()
    assert "01HZZZZZZZZZZZZZZZZZZZZZZZ" in message["Message-ID"]
