"""The site model: device health snapshots (state), the poll loop (poller), and the
drivers built from the config (devices)."""
