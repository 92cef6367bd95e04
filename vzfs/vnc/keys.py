"""Turns RFB KeyEvents (X11 keysyms) into the bytes xterm would send to the pty, per client.

Theory of operation. A VNC client sends one KeyEvent per key press and release
(rfbproto §KeyEvent), modifiers included, and the keysym of a printable key is the
character it produced (Shift and AltGr already applied by the client). So a
`KeyboardState` only needs to remember which modifier keys are down; on a press it
encodes the key the way xterm does with its default resources (ctlseqs "PC-Style
Function Keys"): special keys are CSI/SS3 sequences, and a modifier changes them to
``CSI 1 ; m X`` or ``CSI n ; m ~`` with m = 1 + Shift·1 + Alt·2 + Ctrl·4 + Meta·8.
Printable keys are UTF-8; Ctrl makes C0 controls; Alt (and Meta) prefix ESC
(xterm ``metaSendsEscape``). AltGr (ISO_Level3_Shift) is not Alt: the client already
sent the character it selects. Shift+Insert is xterm's paste key: it yields `PASTE`
instead of bytes, and the shell pastes the client's clipboard (`paste_bytes`).
"""

from __future__ import annotations

import enum
from typing import Final

from vzfs.terminal.interface import Modes

__all__ = ["KeyboardState", "Paste", "PASTE", "paste_bytes", "is_paste_click",
           "SHIFT", "ALT", "CTRL", "META"]

# xterm's modifier bits: the parameter sent is 1 + the sum (ctlseqs "PC-Style Function Keys").
SHIFT: Final = 1
ALT: Final = 2
CTRL: Final = 4
META: Final = 8

# X11 keysymdef.h: the modifier keys and the bit each one sets.
_MODIFIER_KEYS: Final[dict[int, int]] = {
    0xFFE1: SHIFT, 0xFFE2: SHIFT,      # Shift_L, Shift_R
    0xFFE3: CTRL, 0xFFE4: CTRL,        # Control_L, Control_R
    0xFFE9: ALT, 0xFFEA: ALT,          # Alt_L, Alt_R
    0xFFE7: META, 0xFFE8: META,        # Meta_L, Meta_R
}
# Keys that are modifiers but change no encoding: the client applies them to the keysym
# it sends (AltGr = ISO_Level3_Shift, Mode_switch; Caps_Lock; Super/Hyper).
_IGNORED_KEYS: Final = frozenset({0xFE03, 0xFF7E, 0xFFE5, 0xFFE6, 0xFFEB, 0xFFEC, 0xFFED, 0xFFEE})

ESC: Final = b"\x1b"
CSI: Final = b"\x1b["
SS3: Final = b"\x1bO"

# Cursor keys and Home/End: final byte; SS3 in DECCKM (application cursor) mode, else CSI.
_CURSOR_KEYS: Final[dict[int, bytes]] = {
    0xFF52: b"A", 0xFF54: b"B", 0xFF53: b"C", 0xFF51: b"D",  # Up, Down, Right, Left
    0xFF50: b"H", 0xFF57: b"F",                              # Home, End
    0xFF97: b"A", 0xFF99: b"B", 0xFF98: b"C", 0xFF96: b"D",  # KP_Up, KP_Down, KP_Right, KP_Left
    0xFF95: b"H", 0xFF9C: b"F",                              # KP_Home, KP_End
    0xFF9D: b"E",                                            # KP_Begin
}
# Editing keys and F5-F12: CSI n ~ (ctlseqs "PC-Style Function Keys", VT220 numbering).
_TILDE_KEYS: Final[dict[int, int]] = {
    0xFF63: 2, 0xFF9E: 2,      # Insert, KP_Insert
    0xFFFF: 3, 0xFF9F: 3,      # Delete, KP_Delete
    0xFF55: 5, 0xFF9A: 5,      # Prior (Page Up), KP_Prior
    0xFF56: 6, 0xFF9B: 6,      # Next (Page Down), KP_Next
    0xFFC2: 15, 0xFFC3: 17, 0xFFC4: 18, 0xFFC5: 19,   # F5-F8
    0xFFC6: 20, 0xFFC7: 21, 0xFFC8: 23, 0xFFC9: 24,   # F9-F12
}
# F1-F4: SS3 P..S unmodified, CSI 1 ; m P..S modified.
_PF_KEYS: Final[dict[int, bytes]] = {0xFFBE: b"P", 0xFFBF: b"Q", 0xFFC0: b"R", 0xFFC1: b"S"}
# Keypad keys that type characters (numeric keypad mode, DECKPNM).
_KEYPAD_CHARS: Final[dict[int, str]] = {
    **{0xFFB0 + digit: str(digit) for digit in range(10)},
    0xFFAA: "*", 0xFFAB: "+", 0xFFAC: ",", 0xFFAD: "-", 0xFFAE: ".", 0xFFAF: "/",
    0xFFBD: "=", 0xFF80: " ",
}
_RETURN: Final = frozenset({0xFF0D, 0xFF8D})      # Return, KP_Enter
_BACKSPACE: Final = 0xFF08
_TAB: Final = frozenset({0xFF09, 0xFF89})         # Tab, KP_Tab
_ISO_LEFT_TAB: Final = 0xFE20                     # what X sends for Shift+Tab
_ESCAPE: Final = 0xFF1B
_INSERT: Final = frozenset({0xFF63, 0xFF9E})
_MIDDLE_BUTTON: Final = 1 << 1                    # rfbproto §PointerEvent: button 2

# Ctrl with a digit or punctuation, as xterm and the VT220 map them to C0 controls.
_CTRL_EXTRA: Final[dict[str, int]] = {
    " ": 0x00, "2": 0x00, "3": 0x1B, "4": 0x1C, "5": 0x1D, "6": 0x1E, "7": 0x1F,
    "8": 0x7F, "/": 0x1F, "?": 0x7F,
}


class Paste(enum.Enum):
    """A key that asks for the clipboard to be pasted rather than typing bytes."""

    REQUEST = "paste"


PASTE: Final = Paste.REQUEST


def _char_of(keysym: int) -> str | None:
    """The character a keysym types: Latin-1 keysyms are their code point, and
    0x01000000 + U is Unicode U (X11 keysymdef.h "Unicode characters")."""
    if 0x20 <= keysym <= 0x7E or 0xA0 <= keysym <= 0xFF:
        return chr(keysym)
    if 0x01000100 <= keysym <= 0x0110FFFF:
        code = keysym - 0x01000000
        if 0xD800 <= code <= 0xDFFF:
            return None
        return chr(code)
    return None


def _with_modifiers(final: bytes, number: int, modifiers: int) -> bytes:
    """CSI number ; m final (the number is 1 when the key has none of its own)."""
    return CSI + b"%d;%d" % (number, 1 + modifiers) + final


class KeyboardState:
    """The modifier keys one client holds down; each client has its own."""

    def __init__(self) -> None:
        self._held: dict[int, int] = {}

    @property
    def modifiers(self) -> int:
        """The xterm modifier bits (SHIFT | ALT | CTRL | META) held now."""
        bits = 0
        for bit in self._held.values():
            bits |= bit
        return bits

    def key_event(self, down: bool, keysym: int, modes: Modes | None = None) -> bytes | Paste:
        """The bytes for the pty (often b""), or `PASTE` for Shift+Insert.

        `modes` is the terminal's (for DECCKM); None means a freshly reset terminal.
        """
        if keysym in _MODIFIER_KEYS:
            if down:
                self._held[keysym] = _MODIFIER_KEYS[keysym]
            else:
                self._held.pop(keysym, None)
            return b""
        if not down or keysym in _IGNORED_KEYS:
            return b""
        return self._encode(keysym, self.modifiers, bool(modes and modes.app_cursor))

    def release_all(self) -> None:
        """Forget held modifiers (the client went away or lost focus)."""
        self._held.clear()

    def _encode(self, keysym: int, mods: int, app_cursor: bool) -> bytes | Paste:
        if keysym in _INSERT and mods == SHIFT:
            return PASTE
        if keysym in _CURSOR_KEYS:
            final = _CURSOR_KEYS[keysym]
            if mods:
                return _with_modifiers(final, 1, mods)
            return (SS3 if app_cursor else CSI) + final
        if keysym in _TILDE_KEYS:
            number = _TILDE_KEYS[keysym]
            if mods:
                return _with_modifiers(b"~", number, mods)
            return CSI + b"%d~" % number
        if keysym in _PF_KEYS:
            final = _PF_KEYS[keysym]
            return _with_modifiers(final, 1, mods) if mods else SS3 + final
        meta = ESC if mods & (ALT | META) else b""
        if keysym in _RETURN:
            return meta + b"\r"
        if keysym == _BACKSPACE:
            # xterm: Backspace sends DEL (backarrowKey false); Ctrl+Backspace sends BS.
            return meta + (b"\x08" if mods & CTRL else b"\x7f")
        if keysym == _ISO_LEFT_TAB or (keysym in _TAB and mods & SHIFT):
            return meta + CSI + b"Z"          # CBT, as xterm sends for Shift+Tab
        if keysym in _TAB:
            return meta + b"\t"
        if keysym == _ESCAPE:
            return meta + ESC
        char = _KEYPAD_CHARS.get(keysym) or _char_of(keysym)
        if char is None:
            return b""
        if mods & CTRL:
            control = _control(char)
            if control is not None:
                return meta + bytes([control])
        return meta + char.encode("utf-8")


def _control(char: str) -> int | None:
    """Ctrl+char as a C0 control: @, A-Z, [ \\ ] ^ _ (and lower case) clear bits 5-6."""
    if "@" <= char <= "_" or "a" <= char <= "z":
        return ord(char) & 0x1F
    return _CTRL_EXTRA.get(char)


def is_paste_click(previous_mask: int, button_mask: int) -> bool:
    """Whether a PointerEvent presses the middle button (X11's primary-selection paste)."""
    return bool(button_mask & _MIDDLE_BUTTON and not previous_mask & _MIDDLE_BUTTON)


def paste_bytes(text: str, bracketed: bool) -> bytes:
    """Clipboard text as typed into the pty: line ends become CR (as xterm pastes), other
    C0/C1 controls and DEL are stripped so a paste cannot smuggle escape sequences, and
    with DECSET 2004 the text is wrapped in CSI 200~ … CSI 201~ (ctlseqs "Bracketed Paste")."""
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    kept = "".join(c for c in text
                   if c in "\t\r" or not (c < " " or "\x7f" <= c <= "\x9f"))
    data = kept.encode("utf-8")
    if bracketed and data:
        return CSI + b"200~" + data + CSI + b"201~"
    return data
