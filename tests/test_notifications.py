"""Notifications through real receivers on 127.0.0.1: an HTTPS webhook and an SMTP server with STARTTLS and login.

Delivery, retry after the receiver was down, no duplicate after a SIGKILL between commit and send
(both on SQLite, PostgreSQL and MariaDB), no secret in any log line, and nothing imported or sent
without a channel.
"""
from __future__ import annotations

import email
import email.policy
import logging
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from alert_servers import SmtpReceiver, WebhookReceiver, self_signed
from db_servers import KINDS, database
from pipeline.publish import publish
from scheduler.notifier import deliver
from scheduler.runner import Runner
from scheduler.status import fleet_status, format_status
from scheduler_harness import ROOT, TRAIN_END, Scheduler, append, killed, prepared, scheduler_env, trained_small_fleet, write_config
from test_alert_episodes import episodes, touchy

SECRET = "whsec-7c1f0e9a2b4d4f3e8a61"
PASSWORD = "smtp-pw-51d2b8e0c7a94f"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    return trained_small_fleet(tmp_path_factory.getbasetemp() / "small_fleet")


@pytest.fixture
def tls(tmp_path):
    return self_signed(tmp_path)


def _secret_file(tmp_path, name, value):
    path = tmp_path / name
    path.write_text(value + "\n", encoding="utf-8")
    path.chmod(0o600)
    return str(path)


@pytest.fixture
def notify_db(fleet, tmp_path):
    """new(notify, kind) -> (settings, engine, tables, config): an empty database of that kind of its own
    (tests/db_servers.py) holding 1.5 h of live telemetry, `[notify]` set; engine disposed and database
    dropped after the test."""
    with ExitStack() as stack:

        def new(notify: dict, kind: str = "sqlite"):
            url = stack.enter_context(database(kind, tmp_path))
            config = write_config(tmp_path / "notify.toml", notify={"backoff_s": 0.01, "attempts": 2, **notify})
            settings = fleet.settings(url, config)
            engine, tables = prepared(url, settings)
            stack.callback(engine.dispose)
            t = fleet.telemetry
            append(engine, tables, t[t["timestamp"] <= TRAIN_END + timedelta(hours=1.5)])
            return settings, engine, tables, config

        yield new


def _outbox(engine, tables):
    with engine.connect() as conn:
        return [dict(r) for r in conn.execute(sa.select(tables.alerts.notifications).order_by("id")).mappings()]


def _no_secret_logged(caplog, *secrets):
    for record in caplog.records:
        text = record.getMessage()
        assert not any(s in text for s in secrets), text


@pytest.mark.parametrize("kind", KINDS)
def test_webhook_retried_after_receiver_was_down_delivered_once_signed(fleet, kind, notify_db, tmp_path, tls, caplog):
    caplog.set_level(logging.DEBUG)
    receiver = WebhookReceiver(*tls, SECRET)  # port reserved, server not started yet: the receiver is down
    settings, engine, tables, _ = notify_db({"webhook_url": receiver.url, "webhook_secret_file": _secret_file(tmp_path, "hook", SECRET), "ca_file": str(tls[0])}, kind)
    bundle = touchy(fleet.bundle)
    Runner(settings, engine, bundle).run_once()
    opened = episodes(engine, tables)
    rows = _outbox(engine, tables)
    assert len(rows) == len(opened) > 0 and {r["channel"] for r in rows} == {"webhook"}
    assert all(r["status"] == "pending" and r["attempts"] == 2 and "webhook 127.0.0.1" in r["last_error"] for r in rows)
    status = fleet_status(engine, tables, settings)
    assert sum(r["notifications"]["failing"] for r in status) == len(rows)
    assert f"notifications: {len(rows)} unsent, {len(rows)} failing" in format_status(status)

    receiver.start()
    try:
        sent, failed, deadline = 0, 0, time.monotonic() + 30
        while sent < len(rows) and time.monotonic() < deadline:  # a row is due once its backoff (ms here) has passed
            report = deliver(engine, tables, settings)
            sent, failed = sent + report.sent, failed + report.failed
            time.sleep(0.1)
        assert (sent, failed) == (len(rows), 0)
        # A replay and a backfill of the same windows write no second notification; nothing more is sent.
        Runner(settings, engine, bundle).run_once()
        Runner(settings, engine, bundle).backfill(TRAIN_END + timedelta(seconds=1), TRAIN_END + timedelta(hours=1.5))
        assert deliver(engine, tables, settings).sent == 0
    finally:
        receiver.stop()
    keys = [m["key"] for m in receiver.received]
    assert receiver.rejected == 0 and len(keys) == len(set(keys)) == len(opened)
    assert {m["body"]["idempotency_key"] for m in receiver.received} == set(keys)
    assert {(m["body"]["compressor_id"], m["body"]["start_time"]) for m in receiver.received} == {(r.compressor_id, r.start_time.isoformat()) for r in opened.itertuples()}
    assert all(r["status"] == "sent" and r["sent_at"] for r in _outbox(engine, tables))
    assert sum(r["notifications"]["pending"] for r in fleet_status(engine, tables, settings)) == 0
    _no_secret_logged(caplog, SECRET)


def test_email_over_starttls_with_login(fleet, notify_db, tmp_path, tls, caplog):
    caplog.set_level(logging.DEBUG)
    with SmtpReceiver(*tls, "alerts@plant", PASSWORD) as smtp:
        notify = {
            "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_username": "alerts@plant", "smtp_password_file": _secret_file(tmp_path, "smtp", PASSWORD),
            "email_from": "compressor-ad@plant", "email_to": ["reliability@plant", "control-room@plant"], "ca_file": str(tls[0]),
        }
        settings, engine, tables, _ = notify_db(notify)
        Runner(settings, engine, touchy(fleet.bundle)).run_once()
        opened = episodes(engine, tables)
        assert len(smtp.messages) == len(opened) > 0 and smtp.logins
        messages = [email.message_from_bytes(m, policy=email.policy.default) for m in smtp.messages]
        keys = {m["Idempotency-Key"] for m in messages}
        assert len(keys) == len(opened) and all(m["Message-ID"] == f"<{m['Idempotency-Key']}@compressor-ad>" for m in messages)
        assert all(m["To"] == "reliability@plant, control-room@plant" and "alert opened: compressor" in m["Subject"] for m in messages)
        assert deliver(engine, tables, settings).sent == 0
    _no_secret_logged(caplog, PASSWORD)


@pytest.mark.parametrize("kind", KINDS)
def test_sigkill_between_commit_and_send_delivers_on_the_next_run_once(fleet, kind, notify_db, tmp_path, tls):
    receiver = WebhookReceiver(*tls, SECRET).start()
    try:
        settings, engine, tables, config = notify_db({"webhook_url": receiver.url, "webhook_secret_file": _secret_file(tmp_path, "hook", SECRET), "ca_file": str(tls[0])}, kind)
        model_dir = tmp_path / "models"
        bundle = touchy(fleet.bundle)
        publish(bundle, model_dir)
        scheduler = Scheduler(config, settings.db_url, model_dir, tmp_path / "logs")
        code, log = scheduler.run("run", "--once", crash_at="notify:1")
        assert killed(code), log[-3000:]
        pending = _outbox(engine, tables)
        assert pending and not receiver.received and all(r["status"] == "pending" and r["attempts"] == 0 for r in pending)
        code, log = scheduler.run("run", "--once")
        assert code == 0, log[-3000:]
        code, log = scheduler.run("run", "--once")
        assert code == 0, log[-3000:]
    finally:
        receiver.stop()
    keys = [m["key"] for m in receiver.received]
    assert len(keys) == len(set(keys)) == len(pending) == len(episodes(engine, tables))
    assert SECRET not in "".join(p.read_text() for p in (tmp_path / "logs").iterdir())


def test_without_a_channel_nothing_is_written_imported_or_sent(fleet, notify_db, tmp_path):
    settings, engine, tables, config = notify_db({})
    model_dir = tmp_path / "models"
    bundle = touchy(fleet.bundle)
    publish(bundle, model_dir)
    probe = (
        "import sys; from core.settings import load_settings; from db.engine import make_engine; from scheduler.runner import Runner; "
        f"s = load_settings({str(config)!r}, env={{}}, db_url={settings.db_url!r}, model_dir={str(model_dir)!r}); "
        "assert Runner(s, make_engine(s.db_url)).run_once().ok; "
        "print(sorted(m for m in ('scheduler.channels', 'tenacity', 'smtplib', 'aiosmtpd') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env=scheduler_env(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"
    assert len(episodes(engine, tables)) > 0 and _outbox(engine, tables) == []


def test_wrong_smtp_password_is_recorded_not_retried_and_sent_once_corrected(fleet, notify_db, tmp_path, tls, caplog):
    """A refused login fails the row's try at once (not retried within the send), says so on the row and in
    the log without the password, and holds the channel's other rows for the pass (one refused login per
    pass, not one per row: a mail server may lock the account); once the password is right each is sent once."""
    caplog.set_level(logging.DEBUG)
    wrong = "smtp-wrong-3e9d04b7a1c6"
    with SmtpReceiver(*tls, "alerts@plant", PASSWORD) as smtp:
        password_file = _secret_file(tmp_path, "smtp", wrong)
        notify = {
            "smtp_host": "127.0.0.1", "smtp_port": smtp.port, "smtp_username": "alerts@plant", "smtp_password_file": password_file,
            "email_from": "compressor-ad@plant", "email_to": ["reliability@plant"], "ca_file": str(tls[0]), "attempts": 3, "backoff_s": 0.05,
        }
        settings, engine, tables, _ = notify_db(notify)
        started = time.monotonic()
        Runner(settings, engine, touchy(fleet.bundle)).run_once()  # writes the rows, then the first (refused) pass
        opened = episodes(engine, tables)
        rows = _outbox(engine, tables)
        assert len(rows) > 1 and len(rows) == len(opened) and not smtp.messages and not smtp.logins
        assert len(smtp.refused) == 1  # one refused login, then the channel's other rows wait for the next pass
        tried = [row for row in rows if row["attempts"]]
        assert len(tried) == 1 and tried[0]["status"] == "pending" and tried[0]["sent_at"] is None
        assert tried[0]["last_error"].startswith(f"smtp 127.0.0.1:{smtp.port}: login as alerts@plant refused (535 ")
        assert tried[0]["next_attempt_at"] > tried[0]["created_at"]
        assert all(row["status"] == "pending" and row["last_error"] is None for row in rows if not row["attempts"])
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "via email failed" in r.getMessage()]
        assert len(warnings) == 1 and "login as alerts@plant refused" in warnings[0]
        assert any(f"{len(rows) - 1} held" in r.getMessage() for r in caplog.records)
        assert time.monotonic() - started < 30

        Path(password_file).write_text(PASSWORD + "\n", encoding="utf-8")
        sent, deadline = 0, time.monotonic() + 10
        while sent < len(rows) and time.monotonic() < deadline:  # due once its backoff (0.1 s here) has passed
            sent += deliver(engine, tables, settings).sent
            time.sleep(0.1)
        assert sent == len(rows) and deliver(engine, tables, settings).sent == 0
        keys = [email.message_from_bytes(m, policy=email.policy.default)["Idempotency-Key"] for m in smtp.messages]
        assert len(keys) == len(set(keys)) == len(rows) == len(smtp.logins)
    stored = _outbox(engine, tables)
    assert all(r["status"] == "sent" and r["last_error"] is None for r in stored)
    assert sorted(r["attempts"] for r in stored) == [1] * (len(rows) - 1) + [2]
    assert not any(wrong in r["last_error"] or PASSWORD in r["last_error"] for r in tried)
    _no_secret_logged(caplog, wrong, PASSWORD)


def test_untrusted_webhook_certificate_is_tried_once_per_pass(fleet, notify_db, tmp_path, tls):
    """A certificate the sender does not trust fails the same way on every try: one try per pass, the
    channel's other rows held for the next."""
    other = tmp_path / "other_ca"
    other.mkdir()
    receiver = WebhookReceiver(*tls, SECRET).start()
    try:
        notify = {"webhook_url": receiver.url, "webhook_secret_file": _secret_file(tmp_path, "hook", SECRET), "ca_file": str(self_signed(other)[0]), "attempts": 3}
        settings, engine, tables, _ = notify_db(notify)
        Runner(settings, engine, touchy(fleet.bundle)).run_once()
    finally:
        receiver.stop()
    rows = _outbox(engine, tables)
    assert rows and not receiver.received
    tried = [r for r in rows if r["attempts"]]
    assert len(tried) == 1 and tried[0]["attempts"] == 1 and "CERTIFICATE_VERIFY_FAILED" in tried[0]["last_error"]
    assert all(r["status"] == "pending" and r["last_error"] is None for r in rows if not r["attempts"])
