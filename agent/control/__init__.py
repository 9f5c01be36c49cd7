"""Local control API: HTTP+JSON on a Unix socket (server.py), and its client (client.py)
used by the CLI commands that talk to the running agent."""
