"""The wire between daemon and controller (and the VNC processes): framing, request ids, typed messages, the console stream."""
