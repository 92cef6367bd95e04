"""The terminal lexer and dispatcher both backends share: pty bytes in; calls on a screen model out.

Theory of operation
-------------------
``Parser.feed`` decodes UTF-8 incrementally and cuts the text into tokens with one
regular expression (``_TOKEN``: text runs, CR LF, SGR, CUP, other CSI, C0 controls,
the Linux console's palette sequences, control strings, other escapes). Each token
becomes a call on the backend's screen model, a ``ScreenModel``, whose methods are
named by pyte's mnemonics (``draw``, ``linefeed``, ``cursor_position``,
``erase_in_line``…) and take their parameters decoded: defaults applied (a parameter
of 0 or none means the default, ECMA-48 §5.4.2), numbers saturated at ``MAX_PARAM``.
What a sequence does to the cells is the screen model's; which sequences exist, how
they are cut, what is ignored and what the terminal answers (DA, DSR) is decided here
once, for both backends.

A sequence the feed ends inside is kept for the next feed (``pending``, bounded by
``_MAX_PENDING``); so is a multibyte character, by the decoder. An ESC or C1 byte
that starts no complete sequence (``_lone``) is dropped with what makes it
malformed; a control string longer than any the terminal acts on keeps only its start.

A screen model may also take *shortcuts* (``Shortcuts``), as the fast engine does:
where a *simple stretch* begins (text, CR, LF and SGR in the semicolon form only,
``simple_end``) the parser offers the whole stretch to ``draw_stretch`` instead of
dispatching it token by token, and before a large feed ``skip_ahead`` may skip lines
that could only scroll off the screen. Both are handed the parser's ``run`` for the
parts they leave to the tokenizer.

The behaviours in which pyte 0.8.2's own ``Stream`` is verifiably wrong (FACTS.md:
colon SGR and DCS leak as text, ``CSI > m`` becomes SGR, a C0 byte inside a text run
drops the rest of the run, lost replies) follow xterm's ctlseqs here instead, and the
palette sequences follow the Linux console (linux/drivers/tty/vt/vt.c).
"""

from __future__ import annotations

import codecs
import re
from functools import partial
from typing import Any, Callable, Final, Protocol

# Token kinds, tried in order of frequency. Control strings (DCS, OSC, SOS, PM, APC) end
# at ST, at BEL (xterm accepts BEL for OSC), are cancelled by CAN/SUB, and are aborted by
# an ESC that does not start ST (ECMA-48 §5.6, xterm ctlseqs "Operating System Commands").
# CSI parameters may hold C0 controls, which a VT terminal executes in place (VT100 User
# Guide, "Control Characters"); ESC, CAN and SUB abort the sequence instead.
# ESC ] R and ESC ] P nrrggbb are not OSC strings but the Linux console's palette
# sequences (TERM=linux sends ESC ] R on reset), which need no terminator: P takes exactly
# seven hex digits, C0 controls among them are executed, ESC, CAN and SUB abort it, and
# any other character aborts it and is consumed (vt.c do_con_trol, ESnonstd, ESpalette).
_TOKEN: Final = re.compile(
    r"(?P<text>[^\x00-\x1f\x7f-\x9f]+)"
    r"|(?P<crlf>\r\n)"
    r"|(?P<sgr>\x1b\[([0-9;:]*)m)"
    r"|(?P<cup>\x1b\[([0-9]*);?([0-9]*)H)"
    r"|(?P<csi>(?:\x1b\[|\x9b)([\x30-\x3f\x00-\x17\x19\x1c-\x1f\x7f]*)([\x20-\x2f]*)([\x40-\x7e]))"
    r"|(?P<ctl>[\x00-\x1a\x1c-\x1f\x7f])"
    r"|(?P<pal>\x1b\](?:R|P(?:[\x00-\x17\x19\x1c-\x1f\x7f]*[0-9A-Fa-f]){7}"
    r"|P(?:[\x00-\x17\x19\x1c-\x1f\x7f]*[0-9A-Fa-f]){0,6}[\x00-\x17\x19\x1c-\x1f\x7f]*"
    r"(?:[^0-9A-Fa-f\x00-\x17\x19\x1b-\x1f\x7f]|(?=\x1b))))"
    r"|(?P<str>(\x1b(?:\](?![PR])|[PX^_])|[\x90\x98\x9d\x9e\x9f])([^\x07\x18\x1a\x1b\x9c]*)"
    r"(\x07|\x1b\\|\x9c|[\x18\x1a]|(?=\x1b[^\\])))"
    r"|(?P<esc>\x1b([\x20-\x2f]*)([\x30-\x4f\x51-\x57\x59\x5a\x5c\x60-\x7e]))"
    r"|(?P<lone>[\x1b\x80-\x9f])"
)
_T_TEXT: Final = _TOKEN.groupindex["text"]
_T_CRLF: Final = _TOKEN.groupindex["crlf"]
_T_SGR: Final = _TOKEN.groupindex["sgr"]
_T_CUP: Final = _TOKEN.groupindex["cup"]
_T_CSI: Final = _TOKEN.groupindex["csi"]
_T_CTL: Final = _TOKEN.groupindex["ctl"]
_T_PAL: Final = _TOKEN.groupindex["pal"]
_T_STR: Final = _TOKEN.groupindex["str"]
_T_ESC: Final = _TOKEN.groupindex["esc"]

_CSI_PREFIX: Final = re.compile(r"(?:\x1b\[|\x9b)[\x30-\x3f\x00-\x17\x19\x1c-\x1f\x7f]*[\x20-\x2f]*")
_ESC_PREFIX: Final = re.compile(r"\x1b[\x20-\x2f]*")
_STRING_INTRO: Final = frozenset("\x90\x98\x9d\x9e\x9f")
_C1_STRING_KIND: Final = {"\x90": "P", "\x98": "X", "\x9d": "]", "\x9e": "^", "\x9f": "_"}
_SGR_CHARACTERS: Final = frozenset("0123456789;:")

# A *simple stretch* holds only characters whose width is surely 1 (ASCII and the
# Latin/IPA blocks below the combining diacritics at U+0300, checked against wcwidth
# in the tests), CR, LF and SGR in the semicolon form. A screen model with shortcuts
# draws such stretches in batches with str.split, because a regular expression match
# object per token costs more than the token; a shorter stretch than _BATCH_MIN is
# cheaper token by token.
NOT_SIMPLE: Final = re.compile("[^\x20-\x7e\xa0-\u02ff\r\n\x1b]")
SGR_ONLY: Final = re.compile(r"\x1b\[([0-9;]*)m")
_NOT_SGR: Final = re.compile(r"\x1b(?!\[[0-9;]*m)")
_BATCH_MIN: Final = 32

# Longest control string / unfinished sequence kept between feeds; a sixel image or a
# runaway DCS must not grow memory without bound.
_MAX_PENDING: Final = 4096
_MAX_TITLE: Final = 1024
MAX_PARAM: Final = 65535

# Replies, as xterm and the Linux console send them (xterm ctlseqs "Device Attributes",
# "Device Status Report"; linux/drivers/tty/vt/vt.c VT102ID).
DA1_REPLY: Final = b"\x1b[?6c"
DA2_REPLY: Final = b"\x1b[>0;10;0c"
DSR_OK_REPLY: Final = b"\x1b[0n"

DEC_GRAPHICS: Final = "0"
"""The charset code (``ESC ( 0``) of DEC Special Graphics; ``"B"`` is US ASCII."""


class ScreenModel(Protocol):
    """What the sequences do to one backend's screen: the parser's only way to it.

    Counts and positions arrive decoded: 1-based where the sequence is, defaults
    applied (``set_margins``'s bottom 0 is the last line).
    """

    def draw(self, text: str) -> None:
        """Printable characters (a run of them), after the current charset."""

    def carriage_return(self) -> None: ...     # CR
    def linefeed(self) -> None: ...            # LF, VT, FF (LNM also returns the carriage)
    def index(self) -> None: ...               # IND (ESC D): LF without LNM
    def reverse_index(self) -> None: ...       # RI (ESC M)
    def backspace(self) -> None: ...           # BS
    def tab(self, count: int) -> None: ...     # HT, CHT (CSI I)
    def back_tab(self, count: int) -> None: ...    # CBT (CSI Z)
    def bell(self) -> None: ...                # BEL
    def shift_out(self) -> None: ...           # SO: G1 into GL
    def shift_in(self) -> None: ...            # SI: G0 into GL
    def define_charset(self, code: str, mode: str) -> None: ...    # ESC ( C, ESC ) C; code "0" or "B"
    def set_tab_stop(self) -> None: ...        # HTS (ESC H)
    def clear_tab_stop(self, how: int) -> None: ...    # TBC (CSI g)
    def save_cursor(self) -> None: ...         # DECSC (ESC 7, CSI s)
    def restore_cursor(self) -> None: ...      # DECRC (ESC 8, CSI u)
    def reset(self) -> None: ...               # RIS (ESC c)
    def soft_reset(self) -> None: ...          # DECSTR (CSI ! p)
    def alignment_display(self) -> None: ...   # DECALN (ESC # 8)
    def set_app_keypad(self, on: bool) -> None: ...    # DECKPAM (ESC =), DECKPNM (ESC >)
    def cursor_up(self, count: int) -> None: ...       # CUU
    def cursor_down(self, count: int) -> None: ...     # CUD, VPR
    def cursor_forward(self, count: int) -> None: ...  # CUF, HPR
    def cursor_back(self, count: int) -> None: ...     # CUB
    def cursor_down1(self, count: int) -> None: ...    # CNL
    def cursor_up1(self, count: int) -> None: ...      # CPL
    def cursor_to_column(self, column: int) -> None: ...   # CHA, HPA
    def cursor_to_line(self, line: int) -> None: ...       # VPA
    def cursor_position(self, line: int, column: int) -> None: ...     # CUP, HVP
    def erase_in_display(self, how: int) -> None: ...      # ED (and DECSED)
    def erase_in_line(self, how: int) -> None: ...         # EL (and DECSEL)
    def erase_characters(self, count: int) -> None: ...    # ECH
    def insert_characters(self, count: int) -> None: ...   # ICH
    def delete_characters(self, count: int) -> None: ...   # DCH
    def insert_lines(self, count: int) -> None: ...        # IL
    def delete_lines(self, count: int) -> None: ...        # DL
    def scroll_up(self, count: int) -> None: ...           # SU (CSI S)
    def scroll_down(self, count: int) -> None: ...         # SD (CSI T)
    def repeat(self, count: int) -> None: ...              # REP: the last graphic character
    def select_graphic_rendition(self, params: str) -> None:
        """SGR, its parameter string as sent ("" or digits, ";" and ":")."""

    def set_margins(self, top: int, bottom: int) -> None: ...  # DECSTBM
    def ansi_mode(self, mode: int, on: bool) -> None: ...      # SM, RM (CSI h, CSI l)
    def dec_mode(self, mode: int, on: bool) -> None: ...       # DECSET, DECRST (CSI ? h, CSI ? l)
    def set_cursor_style(self, style: int) -> None: ...        # DECSCUSR (CSI SP q), 0..6
    def set_title(self, title: str) -> None: ...               # OSC 0, OSC 2
    def set_palette(self, sequence: str) -> None:
        """ESC ] R or ESC ] P nrrggbb as cut (palette.apply_palette_sequence reads it);
        the controls inside it are already executed."""

    def reply(self, data: bytes) -> None: ...                  # DA and DSR answers for the pty
    def report_cursor_position(self) -> None: ...              # CPR (CSI 6 n)


Run = Callable[[str, int, int, bool], int]
"""``Parser.run``: process text[position:end], batches allowed or not; return where
an unfinished sequence starts (or end)."""


class Shortcuts(Protocol):
    """A screen model's faster paths through the text (the fast engine's)."""

    def stretch_end(self, text: str, position: int, end: int) -> int:
        """Where the simple stretch that starts at `position` ends, or `position` when
        the screen model would draw no stretch now."""
        ...

    def draw_stretch(self, stretch: str, run: Run) -> None:
        """Draw a simple stretch, as the tokens in it would have drawn it."""

    def skip_ahead(self, text: str, run: Run) -> int:
        """Process the start of a feed's text as far as it can be done without
        tokenizing it all; return where the tokenizer must take over."""
        ...


def _new_decoder() -> codecs.IncrementalDecoder:
    # "replace" turns every invalid byte into U+FFFD, and the incremental decoder keeps
    # a multibyte sequence split between two feeds.
    return codecs.getincrementaldecoder("utf-8")("replace")


# CSI finals (no private marker, no intermediates) whose one parameter is a count or
# a selector: the screen model's method and the parameter's default.
_CSI_ONE_PARAMETER: Final[dict[str, tuple[str, int]]] = {
    "@": ("insert_characters", 1),
    "A": ("cursor_up", 1),
    "B": ("cursor_down", 1),
    "C": ("cursor_forward", 1),
    "D": ("cursor_back", 1),
    "E": ("cursor_down1", 1),
    "F": ("cursor_up1", 1),
    "G": ("cursor_to_column", 1),
    "I": ("tab", 1),
    "J": ("erase_in_display", 0),
    "K": ("erase_in_line", 0),
    "L": ("insert_lines", 1),
    "M": ("delete_lines", 1),
    "P": ("delete_characters", 1),
    "S": ("scroll_up", 1),
    "X": ("erase_characters", 1),
    "Z": ("back_tab", 1),
    "`": ("cursor_to_column", 1),
    "a": ("cursor_forward", 1),
    "b": ("repeat", 1),
    "d": ("cursor_to_line", 1),
    "e": ("cursor_down", 1),
    "g": ("clear_tab_stop", 0),
}


class Parser:
    """Feeds one screen model: the lexer's state between feeds and the dispatch tables."""

    def __init__(self, screen: ScreenModel, shortcuts: Shortcuts | None = None) -> None:
        self.screen = screen
        self.shortcuts = shortcuts
        self.pending = ""
        self._decoder = _new_decoder()
        # Bound once: a table lookup and a call per token, the screen's methods named
        # nowhere else.
        self._draw = screen.draw
        self._sgr = screen.select_graphic_rendition
        self._cursor_position = screen.cursor_position
        self._controls: dict[str, Callable[[], None]] = {
            "\r": screen.carriage_return,
            "\n": screen.linefeed,
            "\x0b": screen.linefeed,
            "\x0c": screen.linefeed,
            "\x08": screen.backspace,
            "\t": partial(screen.tab, 1),
            "\x07": screen.bell,
            "\x0e": screen.shift_out,
            "\x0f": screen.shift_in,
        }
        self._escapes: dict[str, Callable[[], None]] = {
            "7": screen.save_cursor,
            "8": screen.restore_cursor,
            "D": screen.index,
            "E": self._next_line,
            "M": screen.reverse_index,
            "H": screen.set_tab_stop,
            "c": screen.reset,
            "=": partial(screen.set_app_keypad, True),
            ">": partial(screen.set_app_keypad, False),
        }
        self._csi_one: dict[str, tuple[Callable[[int], None], int]] = {
            final: (getattr(screen, name), default) for final, (name, default) in _CSI_ONE_PARAMETER.items()
        }

    # ------------------------------------------------------------------ feeding

    def feed(self, data: bytes) -> None:
        """Process bytes read from the pty master."""
        text = self.pending + self._decoder.decode(data)
        self.pending = ""
        position = 0
        if self.shortcuts is not None:
            position = self.shortcuts.skip_ahead(text, self.run)
        stop = self.run(text, position, len(text))
        if stop < len(text):
            self.pending = pending_part(text[stop:])

    def snapshot(self) -> dict[str, Any]:
        """The lexer's part of a terminal snapshot: the unfinished sequence and the
        decoder's unfinished character."""
        buffered, flag = self._decoder.getstate()
        return {"pending": self.pending, "utf8": [list(buffered), flag]}

    def restore(self, snapshot: dict[str, Any]) -> None:
        """Take the lexer's state from a terminal snapshot."""
        self.pending = snapshot["pending"]
        buffered, flag = snapshot["utf8"]
        self._decoder.setstate((bytes(buffered), flag))

    def run(self, text: str, position: int, end: int, batch: bool = True) -> int:
        """Process text[position:end]; return where an unfinished sequence starts (or end)."""
        match = _TOKEN.match
        draw = self._draw
        shortcuts = self.shortcuts
        # Tokens before this position are known not to open a stretch worth a batch.
        no_batch_before = position if batch and shortcuts is not None else end
        while position < end:
            token = match(text, position, end)
            assert token is not None
            kind = token.lastindex
            # Text, CR LF and SGR (the first three kinds) may open a simple stretch.
            if position >= no_batch_before and kind is not None and kind <= _T_SGR:
                assert shortcuts is not None
                stop = shortcuts.stretch_end(text, position, end)
                if stop - position >= _BATCH_MIN:
                    shortcuts.draw_stretch(text[position:stop], self.run)
                    position = stop
                    continue
                no_batch_before = stop
            if kind == _T_TEXT:
                draw(token.group())
            elif kind == _T_CRLF:
                self.screen.carriage_return()
                self.screen.linefeed()
            elif kind == _T_SGR:
                self._sgr(token.group(_T_SGR + 1))
            elif kind == _T_CUP:
                # CUP alone is most of what full-screen programs send (top, vim, less).
                self._cursor_position(
                    number(token.group(_T_CUP + 1)) or 1, number(token.group(_T_CUP + 2)) or 1
                )
            elif kind == _T_CSI:
                self._csi(token.group(_T_CSI + 1), token.group(_T_CSI + 2), token.group(_T_CSI + 3))
            elif kind == _T_CTL:
                control = self._controls.get(token.group())
                if control is not None:
                    control()
            elif kind == _T_STR:
                self._control_string(
                    token.group(_T_STR + 1), token.group(_T_STR + 2), token.group(_T_STR + 3)
                )
            elif kind == _T_PAL:
                self._palette_sequence(token.group())
            elif kind == _T_ESC:
                self._escape(token.group(_T_ESC + 1), token.group(_T_ESC + 2))
            else:
                following = _lone(text, position, end)
                if following < 0:
                    return position
                position = following
                continue
            position = token.end()
        return end

    # ------------------------------------------------------------------ dispatch

    def _execute(self, characters: str) -> None:
        """The C0 controls among `characters`, executed in place (VT100 User Guide)."""
        for char in characters:
            if char < " " or char == "\x7f":
                control = self._controls.get(char)
                if control is not None:
                    control()

    def _next_line(self) -> None:
        """NEL (ESC E): CR and IND."""
        self.screen.carriage_return()
        self.screen.index()

    def _control_string(self, intro: str, body: str, terminator: str) -> None:
        """DCS, OSC, SOS, PM, APC: swallowed; OSC 0 and 2 set the title (xterm ctlseqs)."""
        kind = _C1_STRING_KIND.get(intro, intro[-1])
        if kind != "]" or terminator in ("\x18", "\x1a", ""):
            return
        command, _, value = body.partition(";")
        if command in ("0", "2"):
            self.screen.set_title("".join(char for char in value if char.isprintable())[:_MAX_TITLE])

    def _palette_sequence(self, sequence: str) -> None:
        """ESC ] R, ESC ] P nrrggbb: the Linux console's palette; the controls inside
        come first."""
        self._execute(sequence[3:])
        self.screen.set_palette(sequence)

    def _escape(self, intermediates: str, final: str) -> None:
        if intermediates:
            if intermediates in ("(", ")") and final in "0AB":
                self.screen.define_charset(DEC_GRAPHICS if final == "0" else "B", intermediates)
            elif intermediates == "#" and final == "8":
                self.screen.alignment_display()
            return
        escape = self._escapes.get(final)
        if escape is not None:
            escape()

    def _csi(self, params: str, intermediates: str, final: str) -> None:
        screen = self.screen
        if params and not params.isprintable():
            self._execute(params)
            params = "".join(char for char in params if " " <= char < "\x7f")
        private = ""
        if params and params[0] in "<=>?":
            private, params = params[0], params[1:]
        if intermediates:
            if intermediates == "!" and final == "p" and not private:
                screen.soft_reset()
            elif intermediates == " " and final == "q" and not private:
                # DECSCUSR: xterm ignores a style it does not know.
                try:
                    style = number(params) if params else 0
                except ValueError:
                    return
                if style <= 6:
                    screen.set_cursor_style(style)
            return
        if final == "m" and not private:
            if not params or set(params) <= _SGR_CHARACTERS:
                self._sgr(params)
            return
        parts = params.split(";") if params else []
        if ":" in params:
            parts = [part.split(":", 1)[0] for part in parts]
        try:
            args = [number(part) for part in parts]
        except ValueError:
            return
        if not private:
            one = self._csi_one.get(final)
            if one is not None:
                handler, default = one
                handler(arg(args, 0, default))
            elif final == "H" or final == "f":
                self._cursor_position(arg(args, 0, 1), arg(args, 1, 1))
            elif final == "T":
                # CSI Ps ; Ps ; Ps ; Ps ; Ps T with five parameters is mouse highlight tracking.
                if len(args) <= 1:
                    screen.scroll_down(arg(args, 0, 1))
            elif final == "h" or final == "l":
                for mode in args:
                    screen.ansi_mode(mode, final == "h")
            elif final == "r":
                screen.set_margins(arg(args, 0, 1), arg(args, 1, 0))
            elif final == "s":
                if not args:
                    screen.save_cursor()
            elif final == "u":
                if not args:
                    screen.restore_cursor()
            elif final == "c":
                if arg(args, 0, 0) == 0:
                    screen.reply(DA1_REPLY)
            elif final == "n":
                what = arg(args, 0, 0)
                if what == 5:
                    screen.reply(DSR_OK_REPLY)
                elif what == 6:
                    screen.report_cursor_position()
        elif private == "?":
            if final == "h" or final == "l":
                for mode in args:
                    screen.dec_mode(mode, final == "h")
            elif final == "J":
                screen.erase_in_display(arg(args, 0, 0))
            elif final == "K":
                screen.erase_in_line(arg(args, 0, 0))
        elif private == ">":
            # CSI > c is secondary DA; CSI > Ps ; Ps m is xterm's modifyOtherKeys and
            # everything else with ">" is an xterm resource setting: never SGR.
            if final == "c" and arg(args, 0, 0) == 0:
                screen.reply(DA2_REPLY)


def _lone(text: str, position: int, end: int) -> int:
    """An ESC or C1 byte that starts no complete sequence: the next position, or -1
    when the sequence may still be completed by the next feed."""
    char = text[position]
    if char in _STRING_INTRO:
        return -1
    if char == "\x1b" or char == "\x9b":
        if char == "\x1b" and position + 1 < end and text[position + 1] in "P]X^_":
            return -1
        prefix = _CSI_PREFIX.match(text, position, end)
        if prefix is not None:
            if prefix.end() == end:
                return -1
            # A malformed CSI is dropped; CAN or SUB that cancelled it goes too.
            following = prefix.end()
            return following + 1 if text[following] in "\x18\x1a" else following
        if char == "\x1b":
            escape = _ESC_PREFIX.match(text, position, end)
            assert escape is not None
            if escape.end() == end:
                return -1
            return escape.end()
    # Other C1 controls (NEL, IND, … in 8-bit form) are not used by UTF-8 programs.
    return position + 1


def pending_part(rest: str) -> str:
    """What to keep of an unfinished sequence for the next feed, within a bound."""
    if len(rest) <= _MAX_PENDING:
        return rest
    if rest[0] in _STRING_INTRO or (rest[0] == "\x1b" and rest[1] in "P]X^_"):
        # A control string longer than any we act on: keep its start (an OSC title
        # is cut there) and a final ESC that may begin its ST.
        return rest[:_MAX_PENDING] + ("\x1b" if rest[-1] == "\x1b" else "")
    return ""


def simple_end(text: str, position: int, end: int, others: re.Pattern[str] = NOT_SIMPLE) -> int:
    """Where the stretch that starts at `position` ends: at the first escape that is
    not SGR or the first character `others` finds.

    The scan goes through windows that double in size, and looks for the next escape
    that is not SGR before looking for other characters, so that finding a short
    stretch (cursor-addressed output) costs little and a long one stays linear.
    """
    start = position
    window = 256
    while True:
        stop = min(end, start + window)
        escape = _NOT_SGR.search(text, start, stop)
        bound = stop if escape is None else escape.start()
        other = others.search(text, start, bound)
        if other is not None:
            return other.start()
        if escape is not None:
            # The window's end may cut an SGR, which the look-ahead could not see.
            sgr = SGR_ONLY.match(text, bound, end)
            if sgr is None:
                return bound
            start = sgr.end()
            continue
        if stop == end:
            return end
        start = stop
        window *= 2


def number(digits: str) -> int:
    """A decimal parameter saturated at MAX_PARAM (ValueError if not decimal): int()
    refuses more than sys.get_int_max_str_digits() digits, 4300 by default."""
    digits = digits.lstrip("0")
    if len(digits) > 5 and digits.isdigit():
        return MAX_PARAM
    return min(int(digits), MAX_PARAM) if digits else 0


def arg(args: list[int], index: int, default: int) -> int:
    """Parameter `index`, with 0 and absence meaning `default` (ECMA-48 §5.4.2)."""
    if index < len(args) and args[index]:
        return args[index]
    return default
