"""Validate OCPP messages against the OCA JSON schemas that ship inside the ``ocpp``
package (ocpp/v16/schemas, ocpp/v201/schemas), stricter than the library itself:

- ``format: date-time`` is enforced (jsonschema ignores formats unless told), as
  RFC 3339 *with* a timezone, and with at most 3 fractional digits: evsite's own rule
  (agent.timefmt), because some 2.0.1 CSMSs reject more;
- a failure names the JSON pointer of the offending value.

``validate(version, action, kind, payload)`` is the function. The ``ocpp_schema_guard``
fixture (autouse wherever this module is loaded as a plugin: ``pytest_plugins =
["tests.ocpp_schemas"]`` in a conftest, or imported into a test module) checks every
message any TestCsms *receives* during a test and fails the test at teardown with the
list of violations. Mark a test ``@pytest.mark.ocpp_unchecked`` when it sends bad
frames on purpose.
"""

from __future__ import annotations

import decimal
import json
import re
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import ocpp
import pytest
from jsonschema import Draft4Validator, FormatChecker

SCHEMA_DIRS = {
    "1.6": Path(ocpp.__file__).parent / "v16" / "schemas",
    "2.0.1": Path(ocpp.__file__).parent / "v201" / "schemas",
}
KINDS = ("call", "result")

# The error codes a station may send: OCPP-J 1.6 table 7 and OCPP-J 2.0.1 section 4.3,
# spelled as each table spells them. 1.6 keeps "FormationViolation" and
# "OccurenceConstraintViolation" (errata 5.1/5.2: not fixed, would break implementations);
# 2.0.1 corrected the first only. The ocpp library sends the 2.x spellings in 1.6 too;
# the station re-spells them (agent/uplink/error_codes.py), and these sets hold it to that.
CALLERROR_CODES = {
    "1.6": {
        "NotImplemented", "NotSupported", "InternalError", "ProtocolError", "SecurityError",
        "FormationViolation", "PropertyConstraintViolation", "OccurenceConstraintViolation",
        "TypeConstraintViolation", "GenericError",
    },
    "2.0.1": {
        "FormatViolation", "GenericError", "InternalError", "MessageTypeNotSupported",
        "NotImplemented", "NotSupported", "OccurenceConstraintViolation",
        "PropertyConstraintViolation", "ProtocolError", "RpcFrameworkError", "SecurityError",
        "TypeConstraintViolation",
    },
}

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})$"
)
MAX_FRACTION_DIGITS = 3

_formats = FormatChecker(formats=())


@_formats.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True  # the "type" keyword reports non-strings
    m = _RFC3339.match(value)
    if m is None:
        raise ValueError(f"{value!r} is not RFC 3339 with a timezone (e.g. 2026-01-01T12:00:00.000Z)")
    if m.group(7) and len(m.group(7)) > MAX_FRACTION_DIGITS:
        raise ValueError(f"{value!r} has {len(m.group(7))} fractional digits; evsite sends at most {MAX_FRACTION_DIGITS}")
    text = value.upper().replace("Z", "+00:00")
    if m.group(7):
        text = text.replace("." + m.group(7), "")
    datetime.fromisoformat(text)  # month 13, hour 25...: ValueError
    return True


class OcppSchemaError(AssertionError):
    """A payload that breaks its schema; ``pointer`` is the JSON pointer of the value."""

    def __init__(self, version: str, action: str, kind: str, pointer: str, message: str) -> None:
        where = pointer or "(the payload itself)"
        super().__init__(f"OCPP {version} {action} {kind}: at {where}: {message}")
        self.version, self.action, self.kind, self.pointer, self.detail = version, action, kind, pointer, message


def schema_path(version: str, action: str, kind: str) -> Path:
    if version not in SCHEMA_DIRS:
        raise ValueError(f"unknown OCPP version {version!r}; use one of {', '.join(SCHEMA_DIRS)}")
    if kind not in KINDS:
        raise ValueError(f"kind must be 'call' or 'result', got {kind!r}")
    if kind == "result":
        name = f"{action}Response.json"
    else:
        name = f"{action}Request.json" if version == "2.0.1" else f"{action}.json"
    path = SCHEMA_DIRS[version] / name
    if not path.is_file():
        raise ValueError(f"OCPP {version} has no action {action!r} (no schema {name})")
    return path


@lru_cache(maxsize=None)
def _validator(version: str, action: str, kind: str) -> Draft4Validator:
    # Decimal floats: the 1.6 schemas say multipleOf 0.1, which binary floats fail
    schema = json.loads(schema_path(version, action, kind).read_text("utf-8-sig"), parse_float=decimal.Decimal)
    return Draft4Validator(schema, format_checker=_formats)


def _pointer(path: Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def validate(version: str, action: str, kind: str, payload: Any) -> None:
    """Raise OcppSchemaError (naming the JSON pointer) unless ``payload`` is valid."""
    validator = _validator(version, action, kind)
    data = json.loads(json.dumps(payload), parse_float=decimal.Decimal)
    errors = sorted(validator.iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        first = errors[0]
        detail = first.message
        if first.validator == "format" and first.cause is not None:
            detail = str(first.cause)  # say why, not just "is not a 'date-time'"
        raise OcppSchemaError(version, action, kind, _pointer(first.absolute_path), detail)


def validate_call_error(version: str, payload: Any) -> None:
    """A CALLERROR's code must be one its version defines, details an object."""
    code = payload.get("code") if isinstance(payload, dict) else None
    if code not in CALLERROR_CODES[version]:
        raise OcppSchemaError(version, "CALLERROR", "error", "/code", f"{code!r} is not an OCPP {version} error code")
    if not isinstance(payload.get("details"), dict):
        raise OcppSchemaError(version, "CALLERROR", "error", "/details", "details must be a JSON object")
    if not isinstance(payload.get("description"), str):
        raise OcppSchemaError(version, "CALLERROR", "error", "/description", "description must be a string")


def check_message(msg: Any) -> None:
    """Validate one hil.csms Message (any direction); raises OcppSchemaError."""
    if msg.kind == "invalid":
        raise OcppSchemaError(msg.version, msg.action or "?", "frame", "", f"not an OCPP-J frame: {msg.payload}")
    if msg.kind == "error":
        validate_call_error(msg.version, msg.payload)
        return
    if msg.action is None:
        raise OcppSchemaError(msg.version, "?", msg.kind, "", f"answer {msg.unique_id} matches no outstanding call")
    validate(msg.version, msg.action, msg.kind, msg.payload)


class SchemaGuard:
    """Collects violations in what test CSMSs receive; the fixture fails the test on them."""

    def __init__(self, directions: tuple[str, ...] = ("in",)) -> None:
        self.directions = directions
        self.checked = 0
        self.violations: list[str] = []

    def __call__(self, msg: Any) -> None:
        if msg.direction not in self.directions:
            return
        self.checked += 1
        try:
            check_message(msg)
        except OcppSchemaError as exc:
            self.violations.append(f"{msg}: {exc}")
        except ValueError as exc:  # unknown action for that version
            self.violations.append(f"{msg}: {exc}")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ocpp_unchecked: do not schema-check what test CSMSs receive in this test")


@pytest.fixture(autouse=True)
def ocpp_schema_guard(request: pytest.FixtureRequest):
    from hil.csms.server import OBSERVERS

    guard = SchemaGuard()
    if request.node.get_closest_marker("ocpp_unchecked"):
        yield guard
        return
    OBSERVERS.append(guard)
    try:
        yield guard
    finally:
        OBSERVERS.remove(guard)
    if guard.violations:
        pytest.fail("messages received by the test CSMS break the OCPP schemas:\n  " + "\n  ".join(guard.violations))
