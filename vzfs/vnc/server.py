"""The trio shell that shows one terminal to any number of shared VNC clients.

Theory of operation. `TerminalDisplay` owns the emulator (`Terminal`) and the
`Renderer`. The controller feeds it the pty's output with `feed()`, which is sync and
never waits on a client: the Update's scrolls and dirty rows are drawn into the one
framebuffer at once, and the resulting `Damage` is added to every client's own
`PendingDamage`. Each client then runs two tasks: a reader that parses its messages
(KeyEvents become pty bytes for `on_input`) and a writer that, once the client has an
outstanding FramebufferUpdateRequest and something is pending, waits a few ms so a
burst of output becomes one update, and encodes the *current* framebuffer for the
pending regions (rfbproto §FramebufferUpdateRequest: the pull model). A slow client
therefore only accumulates damage — it skips intermediate frames — and never slows
the pty or the other clients.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, Final

import trio

from vzfs.terminal.emulator import Terminal
from vzfs.terminal.interface import TerminalBackend, Update
from vzfs.vnc import keys
from vzfs.vnc.encodings import (
    REASON_OTHER_CLIENT, REASON_SERVER, STATUS_INVALID_LAYOUT, STATUS_OK, STATUS_PROHIBITED,
)
from vzfs.vnc.render import CopyRect, Damage, Pixels, Rect, Renderer, cursor_shape
from vzfs.vnc.rfb import (
    CLOSED_EVENT, NEED_DATA, AuthFailed, AuthSucceeded, AuthThrottle, ClientCutText,
    ClientInitDone, FramebufferUpdateRequest, KeyEvent, PointerEvent, ProtocolError,
    RFBServerConnection, SetDesktopSize, layout_status,
)

__all__ = ["TerminalDisplay", "PendingDamage", "InputCallback", "ResizeCallback"]

log = logging.getLogger(__name__)

InputCallback = Callable[[bytes], None]
"""Takes bytes for the pty (typed keys, pastes); must not block (the controller queues them)."""

ResizeCallback = Callable[[int, int], None]
"""Takes (columns, lines) a client asked for; sets the pty's size. Must not block."""

MAX_WIDTH: Final = 8000     # pixels a client may ask for (1000 columns of 8 px)
MAX_HEIGHT: Final = 8000

COALESCE: Final = 0.004        # seconds a writer waits so a burst of output is one update
HANDSHAKE_TIMEOUT: Final = 30.0  # a client must reach NORMAL within this
SEND_TIMEOUT: Final = 30.0       # a client that takes no bytes for this long is dropped
RECEIVE_SIZE: Final = 65536
BLINK_PERIOD: Final = 0.6
# Past these a client's pending damage collapses into one full-frame rectangle: it is
# cheaper to send than to track (the client is far behind anyway).
MAX_COPIES: Final = 4
MAX_RECTS: Final = 32


def _intersect(a: Rect, b: Rect) -> Rect | None:
    x, y = max(a.x, b.x), max(a.y, b.y)
    right, bottom = min(a.x + a.width, b.x + b.width), min(a.y + a.height, b.y + b.height)
    if right <= x or bottom <= y:
        return None
    return Rect(x, y, right - x, bottom - y)


class PendingDamage:
    """What one client's framebuffer lacks: CopyRects to apply in order, then rectangles
    whose current pixels it must be sent.

    Merging a later copy: the client applies it after the earlier copies, so stale
    pixels the copy's source holds move with it — their moved places become stale too.
    """

    def __init__(self, width: int, height: int) -> None:
        self.full = Rect(0, 0, width, height)
        self.copies: list[CopyRect] = []
        self.rects: list[Rect] = []

    def __bool__(self) -> bool:
        return bool(self.copies or self.rects)

    def add(self, damage: Damage) -> None:
        if damage.copy is not None:
            copy = damage.copy
            source = Rect(copy.src_x, copy.src_y, copy.width, copy.height)
            dx, dy = copy.x - copy.src_x, copy.y - copy.src_y
            for rect in list(self.rects):
                stale = _intersect(rect, source)
                if stale is not None:
                    self.rects.append(Rect(stale.x + dx, stale.y + dy, stale.width, stale.height))
            self.copies.append(copy)
        self.rects.extend(damage.rects)
        self._bound()

    def add_rect(self, rect: Rect) -> None:
        clipped = _intersect(rect, self.full)
        if clipped is not None:
            self.rects.append(clipped)
            self._bound()

    def _bound(self) -> None:
        if len(self.copies) > MAX_COPIES or len(self.rects) > MAX_RECTS:
            self.copies.clear()
            self.rects = [self.full]

    def take(self) -> tuple[list[CopyRect], list[Rect]]:
        copies, rects = self.copies, self.rects
        self.copies, self.rects = [], []
        return copies, rects


class _Client:
    """One connected client's per-connection state (never shared, never serialized)."""

    def __init__(self, stream: trio.abc.Stream, conn: RFBServerConnection,
                 width: int, height: int) -> None:
        self.stream = stream
        self.conn = conn
        self.pending = PendingDamage(width, height)
        self.requested = False
        self.bell = False
        self.wake = trio.Event()
        self.keyboard = keys.KeyboardState()
        self.buttons = 0
        self.clipboard = ""
        self.send_lock = trio.Lock()
        self.cancel = trio.CancelScope()     # closes this client (it cannot follow a resize)

    def notify(self) -> None:
        self.wake.set()


def _peer_name(stream: trio.abc.Stream) -> str:
    sock = getattr(stream, "socket", None)
    if sock is None:
        return "local"
    try:
        peer = sock.getpeername()
    except OSError:
        return "unknown"
    return str(peer[0]) if isinstance(peer, tuple) else str(peer)


class TerminalDisplay:
    """One terminal's screen, drawn once and served to every client of it."""

    def __init__(self, terminal: TerminalBackend | None = None, renderer: Renderer | None = None,
                 *, throttle: AuthThrottle | None = None,
                 on_resize: ResizeCallback | None = None, name: str = "") -> None:
        self.terminal = terminal or Terminal()
        # rfbproto §ServerInit name-string: what a viewer's window is called. Several
        # domains' viewers must be told apart, so it names the domain (and the title
        # the application set, when it set one).
        self.name = name
        self.renderer = renderer or Renderer(self.terminal.columns, self.terminal.lines)
        self.throttle = throttle or AuthThrottle()
        # Without it, SetDesktopSize is refused (STATUS_PROHIBITED).
        self.on_resize = on_resize
        self._clients: set[_Client] = set()
        self.renderer.render_all([self.terminal.cells(r) for r in range(self.terminal.lines)])
        self._show_screen_colours()
        self._move_cursor()

    def desktop_name(self) -> str:
        title = self.terminal.title
        if title and self.name:
            return f"{title} ({self.name})"
        return title or self.name or "vzfs"

    def snapshot(self) -> dict[str, Any]:
        """What a restarted server needs to show the same screen (issue 5 §7): the
        emulator's state, which holds the terminal size — never per-connection state."""
        return self.terminal.snapshot()

    @classmethod
    def restore(cls, snapshot: dict[str, Any], *, throttle: AuthThrottle | None = None
                ) -> TerminalDisplay:
        """A display drawn from `snapshot()`; clients reconnect and get a full frame."""
        return cls(Terminal.restore(snapshot), throttle=throttle)

    def load(self, snapshot: dict[str, Any]) -> None:
        """Show the terminal `snapshot` describes instead of ours (the controller's
        emulator is the truth: it resynchronises us after a resize or when we fell
        behind). Clients get the whole frame; a new grid size is a server resize."""
        terminal = type(self.terminal).restore(snapshot)
        self.terminal = terminal
        if (terminal.columns, terminal.lines) != (self.renderer.columns, self.renderer.lines):
            self._resize_framebuffer(self.renderer.resize(terminal.columns, terminal.lines), None)
        self.renderer.render_all([terminal.cells(r) for r in range(terminal.lines)])
        self._show_screen_colours()
        self._move_cursor()
        self._broadcast(Damage(None, (Rect(0, 0, self.width, self.height),)))

    def _resize_framebuffer(self, damage: Damage, by: _Client | None) -> None:
        """Tell every client (but `by`, who gets its SetDesktopSize reply) the new size;
        a client that cannot follow a size change is closed (rfbproto §DesktopSize)."""
        for client in list(self._clients):
            client.pending = PendingDamage(self.width, self.height)
            client.pending.add(damage)
            if client is not by:
                if client.conn.supports_resize:
                    client.conn.resize(self.width, self.height,
                                       REASON_OTHER_CLIENT if by is not None else REASON_SERVER)
                else:
                    client.cancel.cancel()
            client.notify()

    @property
    def framebuffer(self) -> Pixels:
        return self.renderer.framebuffer

    @property
    def width(self) -> int:
        return self.renderer.width

    @property
    def height(self) -> int:
        return self.renderer.height

    @property
    def clients(self) -> int:
        """How many clients are past the handshake."""
        return len(self._clients)

    # ------------------------------------------------------------ the pty side

    def feed(self, data: bytes) -> Update:
        """Show pty output; returns the Update, whose replies the caller writes to the pty."""
        update = self.terminal.feed(data)
        self.apply(update)
        return update

    def apply(self, update: Update) -> None:
        """Draw an Update of `self.terminal` and hand its damage to every client."""
        for top, bottom, count in update.scrolls:
            # The emulator's bottom row is inclusive, the renderer's exclusive.
            self._broadcast(self.renderer.scroll(top, bottom + 1, count))
        if update.dirty:
            self._broadcast(self.renderer.render_rows(
                {row: self.terminal.cells(row) for row in update.dirty}))
        self._show_screen_colours()
        self._move_cursor()
        if update.title is not None:
            for client in self._clients:
                client.conn.set_desktop_name(self.desktop_name())
                client.notify()
        if update.bell:
            for client in self._clients:
                client.bell = True
                client.notify()

    def _show_screen_colours(self) -> None:
        """Draw the terminal's screen-wide colour state: its reverse screen (DECSCNM) and
        its palette (ESC ] P, ESC ] R)."""
        self._broadcast(self.renderer.set_reverse_screen(self.terminal.modes.reverse_video))
        self._broadcast(self.renderer.set_palette(self.terminal.palette))

    def _move_cursor(self) -> None:
        cursor = self.terminal.cursor
        shape = cursor_shape(self.terminal.modes.cursor_style)
        self._broadcast(self.renderer.set_cursor(cursor.x, cursor.y, visible=cursor.visible,
                                                 shape=shape))

    def _broadcast(self, damage: Damage) -> None:
        if damage.copy is None and not damage.rects:
            return
        for client in self._clients:
            client.pending.add(damage)
            client.notify()

    async def blink(self, period: float = BLINK_PERIOD) -> None:
        """Show and hide BLINK text forever (xterm's blinkOnTime/blinkOffTime: 600 ms).

        Rows without blinking cells cost nothing: the renderer returns no damage.
        """
        visible = True
        while True:
            await trio.sleep(period)
            visible = not visible
            self._broadcast(self.renderer.set_blink(visible))

    # ------------------------------------------------------------ the client side

    async def serve(self, listener: trio.abc.Listener[trio.abc.Stream], password: str | None,
                    on_input: InputCallback, *,
                    task_status: trio.TaskStatus[list[trio.abc.Listener[trio.abc.Stream]]]
                    = trio.TASK_STATUS_IGNORED) -> None:
        """Accept clients forever; every connection is shared (rfbproto §ClientInit).

        trio.serve_listeners owns the client tasks and rides out EMFILE/ENFILE.
        """
        await trio.serve_listeners(
            functools.partial(self.serve_client, password=password, on_input=on_input),
            [listener], task_status=task_status)

    async def serve_client(self, stream: trio.abc.Stream, password: str | None,
                           on_input: InputCallback) -> None:
        """Run one client to its end; a misbehaving client is closed and harms nobody else."""
        peer = _peer_name(stream)
        conn = RFBServerConnection(password, refuse_reason=self.throttle.refuse_reason(
            peer, trio.current_time()))
        client: _Client | None = None
        try:
            with trio.fail_after(HANDSHAKE_TIMEOUT) as deadline:
                client = await self._handshake(stream, conn, peer, deadline)
            if client is None:
                return
            self._clients.add(client)
            with client.cancel:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._write_updates, client)
                    await self._read_messages(client, on_input)
                    nursery.cancel_scope.cancel()
        # except*: the client's two tasks run in a nursery, which groups what they raise.
        except* ProtocolError as group:
            # rfbproto has no way to tell a client why after the handshake: log and close.
            log.info("closing VNC client %s: %s", peer, group.exceptions[0])
        except* trio.TooSlowError:
            log.info("closing VNC client %s: it stopped reading or answering", peer)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as group:
            log.info("VNC client %s went away: %s", peer, group.exceptions[0])
        finally:
            if client is not None:
                self._clients.discard(client)
            with trio.move_on_after(1) as cleanup:
                cleanup.shield = True
                await stream.aclose()

    async def _handshake(self, stream: trio.abc.Stream, conn: RFBServerConnection,
                         peer: str, deadline: trio.CancelScope) -> _Client | None:
        """rfbproto §Handshaking Messages up to ServerInit; None if the client is done."""
        await stream.send_all(conn.data_to_send())
        while True:
            data = await stream.receive_some(RECEIVE_SIZE)
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if event is CLOSED_EVENT:
                    await stream.send_all(conn.data_to_send())
                    return None
                if isinstance(event, AuthFailed):
                    if not event.refused:
                        # The throttle's delay (up to 30 s) is ours, not the peer's:
                        # it must not eat the handshake deadline.
                        delay = self.throttle.record_failure(peer, trio.current_time())
                        deadline.deadline += delay
                        await trio.sleep(delay)
                    log.info("VNC client %s failed security: %s", peer, event.reason)
                    await stream.send_all(conn.data_to_send())
                    return None
                if isinstance(event, AuthSucceeded):
                    self.throttle.record_success(peer)
                elif isinstance(event, ClientInitDone):
                    await stream.send_all(conn.data_to_send())
                    await stream.send_all(conn.send_server_init(
                        self.width, self.height, self.desktop_name()))
                    return _Client(stream, conn, self.width, self.height)
            await stream.send_all(conn.data_to_send())

    async def _read_messages(self, client: _Client, on_input: InputCallback) -> None:
        conn = client.conn
        while True:
            conn.receive_data(await client.stream.receive_some(RECEIVE_SIZE))
            while True:
                event = conn.next_event()
                if event is NEED_DATA:
                    break
                if event is CLOSED_EVENT:
                    return
                self._handle(client, event, on_input)
            reply = conn.data_to_send()
            if reply:
                await self._send(client, reply)

    def _handle(self, client: _Client, event: object, on_input: InputCallback) -> None:
        if isinstance(event, FramebufferUpdateRequest):
            client.requested = True
            if not event.incremental:
                client.pending.add_rect(Rect(event.x, event.y, event.width, event.height))
            client.notify()
        elif isinstance(event, KeyEvent):
            out = client.keyboard.key_event(event.down, event.keysym, self.terminal.modes)
            if out is keys.PASTE:
                self._paste(client, on_input)
            elif isinstance(out, bytes) and out:
                on_input(out)
        elif isinstance(event, PointerEvent):
            if keys.is_paste_click(client.buttons, event.button_mask):
                self._paste(client, on_input)
            client.buttons = event.button_mask
        elif isinstance(event, ClientCutText):
            # Kept until the user pastes: never typed on every clipboard change (issue 5).
            client.clipboard = event.text
        elif isinstance(event, SetDesktopSize):
            self._set_desktop_size(client, event)

    def _set_desktop_size(self, client: _Client, request: SetDesktopSize) -> None:
        """rfbproto §SetDesktopSize: the framebuffer becomes exactly the requested size
        (noVNC loops otherwise), the terminal as many whole cells as fit, the rest padding."""
        status = layout_status(request, MAX_WIDTH, MAX_HEIGHT)
        columns = request.width // self.renderer.cell_width
        lines = request.height // self.renderer.cell_height
        if status == STATUS_OK and not (2 <= columns <= 1000 and 2 <= lines <= 1000):
            status = STATUS_INVALID_LAYOUT
        if status == STATUS_OK and self.on_resize is None:
            status = STATUS_PROHIBITED
        if status != STATUS_OK:
            client.conn.reply_set_desktop_size(request, status)
            client.notify()
            return
        assert self.on_resize is not None
        damage = self.renderer.resize_pixels(request.width, request.height)
        self.apply(self.terminal.resize(columns, lines))
        client.conn.reply_set_desktop_size(request, STATUS_OK)
        self._resize_framebuffer(damage, client)
        self.on_resize(columns, lines)

    def _paste(self, client: _Client, on_input: InputCallback) -> None:
        data = keys.paste_bytes(client.clipboard, self.terminal.modes.bracketed_paste)
        if data:
            on_input(data)

    async def _send(self, client: _Client, data: bytes) -> None:
        async with client.send_lock:
            with trio.fail_after(SEND_TIMEOUT):
                await client.stream.send_all(data)

    async def _write_updates(self, client: _Client) -> None:
        conn = client.conn
        while True:
            await client.wake.wait()
            client.wake = trio.Event()
            await trio.sleep(COALESCE)
            out = b""
            if client.bell:
                client.bell = False
                out += conn.send_bell()
            if client.requested and (client.pending or conn.has_pending_update):
                client.requested = False
                copies, rects = client.pending.take()
                out += conn.send_framebuffer_update(self.renderer.framebuffer, rects, copies)
            if out:
                await self._send(client, out)
