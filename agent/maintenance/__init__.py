"""Remote maintenance: software updates with rollback, log uploads, certificates.

An operator with hundreds of sites never logs in to a box: the CSMS updates evsite,
pulls its logs and rotates its certificates. This package does the work and knows no
OCPP version; the adapters (agent/uplink/v16/maintenance.py, and 2.0.1's) translate
requests into calls here and the status words reported back into their messages.

    download.py      http(s) fetch: resumable, retries, size cap, SHA-256
    verify.py        signing certificate chain + signature (cryptography)
    release.py       hostile archive -> wheels -> a new release venv; switch, prune
    guard.py         boot guard (stdlib only): rolls back a release that cannot start
    job.py           an update request and its status words (version-neutral)
    update.py        the update state machine (persisted, confirm window, rollback)
    diagnostics.py   the log archive (secrets redacted) and its HTTP upload
    certificates.py  installed roots, the station's key + CSR, the client certificate
    service.py       all of the above wired to the running agent (``open_maintenance``)

How it fits the box, the release tree and systemd: docs/maintenance.md.
"""
