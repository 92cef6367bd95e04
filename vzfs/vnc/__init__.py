"""The VNC tty server: renders a domain's terminal and serves it over RFB."""
