"""Online migration of a running domain to another vzfs over SSH (see source.py)."""
