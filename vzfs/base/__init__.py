"""What every package stands on: the error type, atomic file replacement, process titles."""
