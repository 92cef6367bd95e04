"""What every package stands on: the error type and atomic file replacement."""
