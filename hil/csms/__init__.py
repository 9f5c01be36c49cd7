"""The test CSMS: both OCPP versions on the ``ocpp`` library's central-system side, every
frame logged, idTags decided by a rule, faults on demand. In-process with
``async with TestCsms(...) as csms`` or as a process with ``python -m hil.csms``."""

from hil.csms.answers import TxRecord
from hil.csms.log import Message, MessageLog
from hil.csms.pki import Issued, TestPki
from hil.csms.rules import Fault, TagRule
from hil.csms.server import OBSERVERS, CallErrorReply, ServerTls, StationLink, TestCsms

__all__ = [
    "OBSERVERS", "CallErrorReply", "Fault", "Issued", "Message", "MessageLog", "ServerTls",
    "StationLink", "TagRule", "TestCsms", "TestPki", "TxRecord",
]
