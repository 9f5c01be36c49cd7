"""Logging: journald-friendly stdout, rotating files, and secrets that never get out."""

from __future__ import annotations

import io
import logging
import os

import pytest

from agent import logsetup
from agent.logsetup import redact, register_secret, setup_logging


@pytest.fixture
def installed():
    made = []

    def install(**kw):
        s = setup_logging(**kw)
        made.append(s)
        return s

    yield install
    for s in made:
        s.close()
    logging.getLogger().setLevel(logging.WARNING)


def test_plain_stdout_has_utc_timestamp_and_level(installed):
    out = io.StringIO()
    installed(level="INFO", stream=out, environ={})
    logging.getLogger("evsite.site").info("tick %d", 7)
    logging.getLogger("evsite.site").debug("not shown")
    line = out.getvalue().strip()
    assert line.endswith("INFO    evsite.site: tick 7")
    assert line[:4].isdigit() and "Z " in line
    assert "not shown" not in out.getvalue()


def test_journal_stdout_has_syslog_prefix_and_no_timestamp(installed, tmp_path):
    f = open(tmp_path / "stdout", "w+")
    st = os.fstat(f.fileno())
    try:
        s = installed(level="INFO", stream=f, environ={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert s.journal
        log = logging.getLogger("evsite.poller")
        log.warning("device grid stale")
        try:
            raise RuntimeError("boom")
        except RuntimeError:
            log.exception("loop crashed")
        f.flush()
        lines = (tmp_path / "stdout").read_text().splitlines()
    finally:
        f.close()
    assert lines[0] == "<4>evsite.poller: device grid stale"
    assert lines[1] == "<3>evsite.poller: loop crashed"
    assert all(line.startswith("<3>") for line in lines[1:])  # traceback stays at error level
    assert any("RuntimeError: boom" in line for line in lines)


def test_journal_stream_of_another_file_is_not_the_journal(installed, tmp_path):
    with open(tmp_path / "stdout", "w") as f:
        s = installed(stream=f, environ={"JOURNAL_STREAM": "1:2"})
        assert not s.journal


def test_rotating_files_under_state_dir_are_bounded(installed, tmp_path):
    s = installed(level="WARNING", stream=io.StringIO(), environ={}, state_dir=tmp_path, max_bytes=2000, backups=2)
    assert s.log_file == tmp_path / "logs" / "evsite.log"
    log = logging.getLogger("evsite.test")
    log.debug("debug goes to the file")
    for i in range(200):
        log.info("line %03d %s", i, "x" * 40)
    s.file_handler.flush()
    files = sorted(p.name for p in (tmp_path / "logs").iterdir())
    assert files == ["evsite.log", "evsite.log.1", "evsite.log.2"]
    assert all((tmp_path / "logs" / n).stat().st_size <= 2000 for n in files)
    assert "line 199" in (tmp_path / "logs" / "evsite.log").read_text()


def test_unwritable_log_dir_is_reported_and_skipped(installed, tmp_path):
    blocker = tmp_path / "state"
    blocker.write_text("a file where the state dir should be")
    out = io.StringIO()
    s = installed(stream=out, environ={}, state_dir=blocker)
    assert s.file_handler is None
    assert "file logs disabled: cannot write" in out.getvalue()


def test_bad_level_names_the_level():
    with pytest.raises(ValueError, match="unknown log level 'LOUD'"):
        setup_logging("LOUD", stream=io.StringIO(), environ={})


@pytest.mark.parametrize(
    "text, secret",
    [
        ("headers {'Authorization': 'Basic ZXZzaXRlOnMzY3JldA=='}", "ZXZzaXRlOnMzY3JldA=="),
        ("Authorization: Bearer abc.def.ghi", "abc.def.ghi"),
        ("connecting password=hunter22 to csms", "hunter22"),
        ('{"password": "hunter22", "user": "x"}', "hunter22"),
        ("api_key=K3Y-123456", "K3Y-123456"),
        ("wss://cp001:topsecret@csms.example.com/ocpp/cp001", "topsecret"),
        ('[2,"1","ChangeConfiguration",{"key":"AuthorizationKey","value":"0123456789abcdef"}]', "0123456789abcdef"),
        ('{"component":{"name":"SecurityCtrlr"},"variable":{"name":"BasicAuthPassword"},"attributeValue":"pw-2024-x"}', "pw-2024-x"),
        ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nAAAA\n-----END RSA PRIVATE KEY-----", "MIIEow"),
    ],
)
def test_redact_masks_secret(text, secret):
    out = redact(text)
    assert secret not in out
    assert logsetup.MASK in out


def test_redact_keeps_ordinary_text():
    text = "device grid (eastron-sdm630 on lan unit 2) stale since 12:00:03Z: timeout"
    assert redact(text) == text


def test_every_record_is_redacted_including_args_and_tracebacks(installed, tmp_path):
    out = io.StringIO()
    s = installed(level="DEBUG", stream=out, environ={}, state_dir=tmp_path)
    register_secret("my-csms-password-42")
    log = logging.getLogger("evsite.uplink")
    log.info("connecting with %s", {"Authorization": "Basic dXNlcjpwYXNz"})
    log.info("read key file: %s", "my-csms-password-42")
    try:
        raise ValueError("bad url wss://cp:pa55word@host/")
    except ValueError:
        log.exception("connect failed")
    s.file_handler.flush()
    for text in (out.getvalue(), (tmp_path / "logs" / "evsite.log").read_text()):
        assert "dXNlcjpwYXNz" not in text
        assert "my-csms-password-42" not in text
        assert "pa55word" not in text
        assert "ValueError" in text and "wss://cp:***@host/" in text
