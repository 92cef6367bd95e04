"""The errors of the RFB layer: what a peer did wrong, and what our own caller did wrong."""

from errno import EPROTO


class ProtocolError(Exception):
    """The client sent something malformed or hostile; the shell closes the connection.

    ``reason`` is a sentence naming the message and the fault, fit for a log line
    and, where the protocol allows (rfbproto §SecurityResult in 3.8), for the client.
    """

    errno = EPROTO

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

    @property
    def sentence(self) -> str:
        """The reason under the name vzfs errors use (``VzfsError.sentence``)."""
        return self.reason


class LocalProtocolError(Exception):
    """The server side used the connection out of order (a bug in the shell, not the peer)."""
