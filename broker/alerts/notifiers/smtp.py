"""E-mail over SMTP, one connection per alert (alerts are rare; a held connection would only time out).

The recipient is the ``address`` given to ``send`` (the technician's e-mail address). A 4xx answer or a
network failure is worth another try; a 5xx answer is not (wrong address, refused sender, bad login).
"""

from __future__ import annotations

import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path
from typing import Literal

import aiosmtplib
from pydantic import Field, field_validator, model_validator

from broker.alerts.notifiers.base import DeliveryError, Message, one_line, plain_text, read_secret
from config.base import Section


def _mailbox(value: str) -> str | None:
    """The bare address of 'Name <a@b>' or 'a@b'; None when it is not one."""
    if "\n" in value or "\r" in value:
        return None
    addr = parseaddr(value)[1]
    return addr if "@" in addr.strip("@") else None


class SmtpConfig(Section):
    type: Literal["smtp"] = Field(default="smtp", description="E-mail over SMTP")
    host: str = Field(min_length=1, description="SMTP server (the agency's mail relay)")
    port: int = Field(default=25, ge=1, le=65535, description="SMTP port: 25 or 587 with STARTTLS, 465 with tls")
    security: Literal["none", "starttls", "tls"] = Field(
        default="starttls",
        description="'starttls': plain connect, then STARTTLS (required); 'tls': TLS from the first byte (465); "
        "'none': no encryption (only on a trusted local relay)",
    )
    username: str | None = Field(default=None, description="SMTP login; no login when absent")
    password_file: Path | None = Field(
        default=None,
        description="File holding the SMTP password, read at send time; relative paths are looked up in "
        "$CREDENTIALS_DIRECTORY",
    )
    sender: str = Field(description="From address, e.g. '政务大厅运维 <alerts@example.gov.cn>'")
    timeout_s: float = Field(default=10.0, gt=0, le=120, description="Limit for connecting and for each SMTP step")

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str) -> str:
        if _mailbox(value) is None:
            raise ValueError("not an e-mail address: write 'alerts@example.gov.cn' or 'Name <alerts@example.gov.cn>'")
        return value

    @model_validator(mode="after")
    def _login(self) -> SmtpConfig:
        if (self.password_file is None) != (self.username is None):
            raise ValueError("username and password_file go together (both for a login, neither without)")
        return self


class SmtpNotifier:
    def __init__(self, name: str, cfg: SmtpConfig) -> None:
        self.name = name
        self.cfg = cfg

    def compose(self, msg: Message, address: str) -> EmailMessage:
        mail = EmailMessage()
        mail["Subject"] = one_line(msg.subject)
        mail["From"] = self.cfg.sender
        mail["To"] = address
        mail["Date"] = formatdate(localtime=True)
        sender = _mailbox(self.cfg.sender) or ""
        mail["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2] or None)
        # For mail rules ("critical to my phone"); the subject is for people.
        mail["X-Hallfleet-Severity"] = msg.severity
        mail["X-Hallfleet-Site"] = msg.site
        mail.set_content(plain_text(msg), charset="utf-8")
        return mail

    async def send(self, msg: Message, address: str | None = None) -> None:
        """Mail ``msg`` to ``address`` (required)."""
        rcpt = _mailbox(address) if address else None
        if address is None or rcpt is None:
            raise DeliveryError(
                self.name,
                f"no usable e-mail address for this recipient ({address!r}): set the technician's e-mail address",
                retryable=False,
            )
        cfg = self.cfg
        password = read_secret(self.name, cfg.password_file, "SMTP password") if cfg.password_file else None
        client = aiosmtplib.SMTP(
            hostname=cfg.host,
            port=cfg.port,
            use_tls=cfg.security == "tls",
            # STARTTLS is done below, by hand: left to aiosmtplib (None) it would be skipped when the
            # server does not offer it, a silent downgrade to clear text.
            start_tls=False,
            timeout=cfg.timeout_s,
        )
        try:
            async with client:
                await client.ehlo()
                if cfg.security == "starttls":
                    if not client.supports_extension("starttls"):
                        raise DeliveryError(
                            self.name,
                            f"{cfg.host}:{cfg.port} does not offer STARTTLS: check security and port "
                            "('tls' for port 465, 'none' only for a trusted local relay)",
                            retryable=False,
                        )
                    await client.starttls()
                if cfg.username is not None and password is not None:
                    await client.login(cfg.username, password)
                await client.send_message(self.compose(msg, address), sender=_mailbox(cfg.sender), recipients=[rcpt])
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise self._failure(exc, rcpt) from None

    async def aclose(self) -> None:
        """Nothing held between alerts."""

    def _failure(self, exc: Exception, rcpt: str) -> DeliveryError:
        server = f"{self.cfg.host}:{self.cfg.port}"
        if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
            codes = [r.code for r in exc.recipients]
            answers = "; ".join(f"{r.code} {one_line(r.message)}" for r in exc.recipients)
            temporary = all(400 <= c < 500 for c in codes)
            hint = "try again later" if temporary else "check the technician's e-mail address"
            return DeliveryError(self.name, f"{server} refused recipient {rcpt}: {answers}; {hint}", temporary)
        if isinstance(exc, aiosmtplib.SMTPResponseException):
            temporary = 400 <= exc.code < 500
            hint = "try again later" if temporary else _hint(exc)
            return DeliveryError(self.name, f"{server} answered {exc.code} {one_line(exc.message)}; {hint}", temporary)
        if isinstance(exc, aiosmtplib.SMTPNotSupported):
            return DeliveryError(self.name, f"{server}: {exc}; check the channel's settings", retryable=False)
        if isinstance(exc, ssl.SSLCertVerificationError):
            return DeliveryError(
                self.name, f"{server}: TLS certificate not trusted ({exc.verify_message}); check host", retryable=False
            )
        if isinstance(exc, TimeoutError):
            return DeliveryError(self.name, f"{server} did not answer within {self.cfg.timeout_s} s")
        return DeliveryError(self.name, f"cannot deliver via {server}: {exc}; check that the mail server is up")


def _hint(exc: aiosmtplib.SMTPResponseException) -> str:
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return "check username and password_file"
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return "check sender (the relay must accept it as a sender)"
    return "the server will not take this message; check the channel's settings"
