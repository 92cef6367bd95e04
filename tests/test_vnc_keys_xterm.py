"""Every key of vzfs's keyboard table (vzfs/vnc/keys.py) against the bytes xterm sends
for it with its default resources — written out here from ctlseqs ("PC-Style Function
Keys", "VT220-Style Function Keys") and xterm's input.c, not derived from keys.py — in
every modifier combination and in both cursor-key modes. A table entry removed, added
or changed in keys.py fails here (issue 16: a lost KP_Up or a changed Ctrl-8 went by)."""

from __future__ import annotations

import itertools

import pytest

from vzfs.terminal.emulator import Terminal
from vzfs.vnc import keys

MODIFIER_KEYS = {keys.SHIFT: 0xFFE1, keys.ALT: 0xFFE9, keys.CTRL: 0xFFE3, keys.META: 0xFFE7}
ALL_MODIFIERS = [sum(c) for n in range(5) for c in itertools.combinations(
    (keys.SHIFT, keys.ALT, keys.CTRL, keys.META), n)]

# keysym → (final byte, or tilde number): xterm's cursor keys (CSI/SS3 X), its editing
# and function keys (CSI n ~), its PF1-PF4 (SS3 P..S).
XTERM_CURSOR = {
    0xFF52: "A", 0xFF54: "B", 0xFF53: "C", 0xFF51: "D", 0xFF50: "H", 0xFF57: "F",
    0xFF97: "A", 0xFF99: "B", 0xFF98: "C", 0xFF96: "D", 0xFF95: "H", 0xFF9C: "F",
    0xFF9D: "E",
}
XTERM_TILDE = {
    0xFF63: 2, 0xFF9E: 2, 0xFFFF: 3, 0xFF9F: 3, 0xFF55: 5, 0xFF9A: 5, 0xFF56: 6, 0xFF9B: 6,
    0xFFC2: 15, 0xFFC3: 17, 0xFFC4: 18, 0xFFC5: 19, 0xFFC6: 20, 0xFFC7: 21, 0xFFC8: 23,
    0xFFC9: 24,
}
XTERM_PF = {0xFFBE: "P", 0xFFBF: "Q", 0xFFC0: "R", 0xFFC1: "S"}
# The numeric keypad in numeric mode (DECKPNM, xterm's default) types characters.
XTERM_KEYPAD = {
    0xFFB0: "0", 0xFFB1: "1", 0xFFB2: "2", 0xFFB3: "3", 0xFFB4: "4", 0xFFB5: "5",
    0xFFB6: "6", 0xFFB7: "7", 0xFFB8: "8", 0xFFB9: "9", 0xFFAA: "*", 0xFFAB: "+",
    0xFFAC: ",", 0xFFAD: "-", 0xFFAE: ".", 0xFFAF: "/", 0xFFBD: "=", 0xFF80: " ",
}
# Ctrl with a digit or punctuation (xterm, after the VT220): the C0 control it sends.
XTERM_CTRL = {
    " ": 0x00, "2": 0x00, "3": 0x1B, "4": 0x1C, "5": 0x1D, "6": 0x1E, "7": 0x1F, "8": 0x7F,
    "/": 0x1F, "?": 0x7F,
    **{chr(c): c & 0x1F for c in range(ord("@"), ord("_") + 1)},
    **{chr(c): c & 0x1F for c in range(ord("a"), ord("z") + 1)},
}


def press(keysym: int, mods: int, app_cursor: bool = False) -> bytes | keys.Paste:
    state = keys.KeyboardState()
    terminal = Terminal(80, 25)
    if app_cursor:
        terminal.feed(b"\x1b[?1h")
    for bit, key in MODIFIER_KEYS.items():
        if mods & bit:
            state.key_event(True, key)
    return state.key_event(True, keysym, terminal.modes)


def test_the_tables_hold_exactly_the_keys_asserted_here() -> None:
    assert {k: v.decode() for k, v in keys._CURSOR_KEYS.items()} == XTERM_CURSOR
    assert keys._TILDE_KEYS == XTERM_TILDE
    assert {k: v.decode() for k, v in keys._PF_KEYS.items()} == XTERM_PF
    assert keys._KEYPAD_CHARS == XTERM_KEYPAD
    assert {c: keys._control(c) for c in XTERM_CTRL} == XTERM_CTRL
    assert set(keys._CTRL_EXTRA) <= set(XTERM_CTRL)


@pytest.mark.parametrize("keysym, final", sorted(XTERM_CURSOR.items()))
def test_cursor_keys(keysym: int, final: str) -> None:
    assert press(keysym, 0) == f"\x1b[{final}".encode()
    assert press(keysym, 0, app_cursor=True) == f"\x1bO{final}".encode()
    for mods in ALL_MODIFIERS[1:]:
        want = f"\x1b[1;{1 + mods}{final}".encode()
        assert press(keysym, mods) == want, mods
        assert press(keysym, mods, app_cursor=True) == want, mods


@pytest.mark.parametrize("keysym, number", sorted(XTERM_TILDE.items()))
def test_editing_and_function_keys(keysym: int, number: int) -> None:
    assert press(keysym, 0) == f"\x1b[{number}~".encode()
    for mods in ALL_MODIFIERS[1:]:
        if mods == keys.SHIFT and number == 2:
            assert press(keysym, mods) is keys.PASTE     # Shift+Insert: xterm pastes
            continue
        assert press(keysym, mods) == f"\x1b[{number};{1 + mods}~".encode(), mods


@pytest.mark.parametrize("keysym, final", sorted(XTERM_PF.items()))
def test_f1_to_f4(keysym: int, final: str) -> None:
    assert press(keysym, 0) == f"\x1bO{final}".encode()
    assert press(keysym, 0, app_cursor=True) == f"\x1bO{final}".encode()
    for mods in ALL_MODIFIERS[1:]:
        assert press(keysym, mods) == f"\x1b[1;{1 + mods}{final}".encode(), mods


@pytest.mark.parametrize("keysym, char", sorted(XTERM_KEYPAD.items()))
def test_keypad_characters(keysym: int, char: str) -> None:
    assert press(keysym, 0) == char.encode()
    assert press(keysym, keys.ALT) == b"\x1b" + char.encode()


@pytest.mark.parametrize("char, control", sorted(XTERM_CTRL.items()))
def test_ctrl_characters(char: str, control: int) -> None:
    assert press(ord(char), keys.CTRL) == bytes([control])
    assert press(ord(char), keys.CTRL | keys.ALT) == b"\x1b" + bytes([control])
