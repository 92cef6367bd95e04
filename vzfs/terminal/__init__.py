"""The terminal emulator layer shared by the `screen` file and the VNC server."""
