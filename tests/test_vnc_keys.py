"""Keysyms to pty bytes, checked byte for byte against xterm's conventions (ctlseqs)."""

from __future__ import annotations

import pytest

from vzfs.terminal.emulator import Terminal
from vzfs.vnc.keys import PASTE, KeyboardState, is_paste_click, paste_bytes

SHIFT_L, CONTROL_L, ALT_L, META_L, ALTGR = 0xFFE1, 0xFFE3, 0xFFE9, 0xFFE7, 0xFE03
UP, DOWN, RIGHT, LEFT, HOME, END = 0xFF52, 0xFF54, 0xFF53, 0xFF51, 0xFF50, 0xFF57
INSERT, DELETE, PRIOR, NEXT = 0xFF63, 0xFFFF, 0xFF55, 0xFF56
F1 = 0xFFBE


def press(state: KeyboardState, keysym: int, *held: int, app_cursor: bool = False) -> object:
    """Hold `held`, press and release keysym, release `held`; the press's output."""
    terminal = Terminal(80, 25)
    if app_cursor:
        terminal.feed(b"\x1b[?1h")
    for mod in held:
        assert state.key_event(True, mod) == b""
    out = state.key_event(True, keysym, terminal.modes)
    assert state.key_event(False, keysym, terminal.modes) == b""
    for mod in held:
        assert state.key_event(False, mod) == b""
    return out


@pytest.mark.parametrize("keysym, expected", [
    (ord("a"), b"a"), (ord("A"), b"A"), (ord("~"), b"~"), (ord(" "), b" "),
    (0xE9, "é".encode()), (0xA3, "£".encode()),
    (0x01000000 + 0x20AC, "€".encode()), (0x01000000 + 0x1F600, "😀".encode()),
    (0xFF0D, b"\r"), (0xFF8D, b"\r"), (0xFF08, b"\x7f"), (0xFF09, b"\t"), (0xFF1B, b"\x1b"),
    (DELETE, b"\x1b[3~"), (INSERT, b"\x1b[2~"), (PRIOR, b"\x1b[5~"), (NEXT, b"\x1b[6~"),
    (HOME, b"\x1b[H"), (END, b"\x1b[F"),
    (UP, b"\x1b[A"), (DOWN, b"\x1b[B"), (RIGHT, b"\x1b[C"), (LEFT, b"\x1b[D"),
    (F1, b"\x1bOP"), (F1 + 1, b"\x1bOQ"), (F1 + 2, b"\x1bOR"), (F1 + 3, b"\x1bOS"),
    (F1 + 4, b"\x1b[15~"), (F1 + 5, b"\x1b[17~"), (F1 + 6, b"\x1b[18~"), (F1 + 7, b"\x1b[19~"),
    (F1 + 8, b"\x1b[20~"), (F1 + 9, b"\x1b[21~"), (F1 + 10, b"\x1b[23~"), (F1 + 11, b"\x1b[24~"),
    (0xFFB7, b"7"), (0xFFAB, b"+"), (0xFE20, b"\x1b[Z"),
    (0xFFE5, b""), (0x0000FFFE, b""), (0x01000000 + 0xD800, b""),
])
def test_unmodified_keys(keysym: int, expected: bytes) -> None:
    assert press(KeyboardState(), keysym) == expected


@pytest.mark.parametrize("keysym, expected", [
    (UP, b"\x1bOA"), (DOWN, b"\x1bOB"), (RIGHT, b"\x1bOC"), (LEFT, b"\x1bOD"),
    (HOME, b"\x1bOH"), (END, b"\x1bOF"), (DELETE, b"\x1b[3~"), (F1, b"\x1bOP"),
])
def test_application_cursor_mode(keysym: int, expected: bytes) -> None:
    assert press(KeyboardState(), keysym, app_cursor=True) == expected


@pytest.mark.parametrize("keysym, held, expected", [
    (UP, (SHIFT_L,), b"\x1b[1;2A"), (UP, (ALT_L,), b"\x1b[1;3A"), (UP, (CONTROL_L,), b"\x1b[1;5A"),
    (LEFT, (CONTROL_L, SHIFT_L), b"\x1b[1;6D"), (RIGHT, (META_L,), b"\x1b[1;9C"),
    (HOME, (CONTROL_L,), b"\x1b[1;5H"), (END, (SHIFT_L,), b"\x1b[1;2F"),
    (DELETE, (CONTROL_L,), b"\x1b[3;5~"), (PRIOR, (SHIFT_L,), b"\x1b[5;2~"),
    (NEXT, (ALT_L, CONTROL_L), b"\x1b[6;7~"), (INSERT, (CONTROL_L,), b"\x1b[2;5~"),
    (F1, (SHIFT_L,), b"\x1b[1;2P"), (F1 + 3, (CONTROL_L,), b"\x1b[1;5S"),
    (F1 + 4, (SHIFT_L,), b"\x1b[15;2~"), (F1 + 11, (CONTROL_L, ALT_L), b"\x1b[24;7~"),
])
def test_modified_special_keys(keysym: int, held: tuple[int, ...], expected: bytes) -> None:
    assert press(KeyboardState(), keysym, *held) == expected
    # Modifiers win over DECCKM: xterm sends CSI 1;m A in both modes.
    assert press(KeyboardState(), keysym, *held, app_cursor=True) == expected


@pytest.mark.parametrize("keysym, held, expected", [
    (ord("c"), (CONTROL_L,), b"\x03"), (ord("C"), (CONTROL_L, SHIFT_L), b"\x03"),
    (ord("a"), (CONTROL_L,), b"\x01"), (ord("z"), (CONTROL_L,), b"\x1a"),
    (ord("["), (CONTROL_L,), b"\x1b"), (ord("\\"), (CONTROL_L,), b"\x1c"),
    (ord("@"), (CONTROL_L,), b"\x00"), (ord(" "), (CONTROL_L,), b"\x00"),
    (ord("_"), (CONTROL_L,), b"\x1f"), (ord("?"), (CONTROL_L,), b"\x7f"),
    (ord("2"), (CONTROL_L,), b"\x00"), (ord("6"), (CONTROL_L,), b"\x1e"),
    (ord("x"), (ALT_L,), b"\x1bx"), (ord("x"), (META_L,), b"\x1bx"),
    (ord("x"), (ALT_L, CONTROL_L), b"\x1b\x18"), (0xE9, (ALT_L,), "\x1bé".encode()),
    (0xFF0D, (ALT_L,), b"\x1b\r"), (0xFF08, (ALT_L,), b"\x1b\x7f"),
    (0xFF08, (CONTROL_L,), b"\x08"), (0xFF09, (SHIFT_L,), b"\x1b[Z"),
    (ord("A"), (SHIFT_L,), b"A"),
    # AltGr is not Alt: the client sends the character it selects, as is.
    (ord("@"), (ALTGR,), b"@"), (0x01000000 + 0x20AC, (ALTGR,), "€".encode()),
])
def test_modified_characters(keysym: int, held: tuple[int, ...], expected: bytes) -> None:
    assert press(KeyboardState(), keysym, *held) == expected


def test_shift_insert_asks_for_paste() -> None:
    assert press(KeyboardState(), INSERT, SHIFT_L) is PASTE
    assert press(KeyboardState(), 0xFF9E, SHIFT_L) is PASTE       # KP_Insert
    assert press(KeyboardState(), INSERT) == b"\x1b[2~"


def test_modifier_state_is_per_instance_and_follows_releases() -> None:
    one, two = KeyboardState(), KeyboardState()
    one.key_event(True, CONTROL_L)
    assert one.key_event(True, ord("c")) == b"\x03"
    assert two.key_event(True, ord("c")) == b"c"
    # Both Control keys down, one released: Control is still held.
    one.key_event(True, 0xFFE4)
    one.key_event(False, CONTROL_L)
    assert one.key_event(True, ord("c")) == b"\x03"
    one.key_event(False, 0xFFE4)
    assert one.key_event(True, ord("c")) == b"c"
    one.key_event(True, SHIFT_L)
    one.release_all()
    assert one.modifiers == 0
    # A release of a key never pressed is harmless.
    assert two.key_event(False, ALT_L) == b""
    assert two.modifiers == 0


def test_releases_send_nothing() -> None:
    state = KeyboardState()
    assert state.key_event(False, ord("a")) == b""
    assert state.key_event(False, UP) == b""


def test_paste_bytes() -> None:
    assert paste_bytes("ls -l\nrm x\r\n", bracketed=False) == b"ls -l\rrm x\r"
    assert paste_bytes("a\x1b[31mb\x07c\x9bd\x7f\té", bracketed=False) == "a[31mbcd\té".encode()
    assert paste_bytes("x", bracketed=True) == b"\x1b[200~x\x1b[201~"
    assert paste_bytes("\x1b[201~", bracketed=True) == b"\x1b[200~[201~\x1b[201~"
    assert paste_bytes("", bracketed=True) == b""


def test_middle_click_paste() -> None:
    assert is_paste_click(0, 2)
    assert not is_paste_click(2, 2)        # held, not a new press
    assert not is_paste_click(0, 1)
