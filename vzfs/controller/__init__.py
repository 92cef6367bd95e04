"""The per-domain controller: creates, supervises and stops one container."""
