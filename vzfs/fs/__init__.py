"""The FUSE control filesystem: the daemon's face to users."""
