"""Handing a rendered digest to the SMTP server."""

from __future__ import annotations

import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid

from monitor.config import Settings
from monitor.digests.build import Digest
from monitor.digests.render import render
from monitor.errors import DeliveryError


def message(digest: Digest, settings: Settings, run_id: int) -> EmailMessage:
    subject, text, html = render(digest, settings.templates_dir)
    msg = EmailMessage()
    msg["Subject"] = subject
    msg["From"] = settings.smtp_from
    msg["To"] = ", ".join(digest.config.recipients)
    msg["Date"] = format_datetime(datetime.now(UTC))
    domain = settings.smtp_from.rsplit("@", 1)[-1]
    msg["Message-ID"] = make_msgid(idstring=f"digest-{run_id}", domain=domain)
    msg.set_content(text)
    msg.add_alternative(html, subtype="html")
    return msg


def send_mail(msg: EmailMessage, settings: Settings, digest: str) -> None:
    """Hand the message to the SMTP server; DeliveryError (with the digest's name) on any failure."""
    try:
        smtp: smtplib.SMTP
        if settings.smtp_security == "tls":
            smtp = smtplib.SMTP_SSL(
                settings.smtp_host,
                settings.smtp_port,
                timeout=settings.smtp_timeout,
                context=ssl.create_default_context(),
            )
        else:
            smtp = smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout)
        with smtp:
            if settings.smtp_security == "starttls":
                smtp.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                password = settings.smtp_password.get_secret_value() if settings.smtp_password else ""
                smtp.login(settings.smtp_user, password)
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException) as e:
        raise DeliveryError(digest, f"SMTP {settings.smtp_host}:{settings.smtp_port}: {e}") from e
