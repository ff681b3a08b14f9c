"""ESC/POS byte sequences this driver sends, and the simulated printer parses.

Names and meanings follow Epson's ESC/POS command reference; Chinese-market printers (Xprinter,
HPRT, SPRT, Winbond-based POS-58/80) implement the same subset.
"""

from __future__ import annotations

DLE = 0x10
ESC = 0x1B
FS = 0x1C
GS = 0x1D
LF = 0x0A

# Real-time commands: the printer executes them on receipt, ahead of queued print data and even
# while it is offline. That is also why a DLE EOT inside binary print data misfires on real printers.
DLE_EOT = bytes([DLE, 0x04])  # + n: transmit real-time status group n (1..4), one byte back
DLE_ENQ = bytes([DLE, 0x05])  # + n: 1 = recover and restart from the failed line, 2 = recover clearing buffers

STATUS_PRINTER = 1  # online/offline, feed button
STATUS_OFFLINE_CAUSE = 2  # cover, paper-end stop, error
STATUS_ERROR_CAUSE = 3  # autocutter, unrecoverable, auto-recoverable
STATUS_ROLL_SENSOR = 4  # near-end, end
STATUS_GROUPS = (STATUS_PRINTER, STATUS_OFFLINE_CAUSE, STATUS_ERROR_CAUSE, STATUS_ROLL_SENSOR)

RECOVER_RESTART = 1
RECOVER_CLEAR_BUFFERS = 2

INIT = bytes([ESC, 0x40])  # ESC @: reset modes (not the receive buffer)
FEED_LINES = bytes([ESC, 0x64])  # ESC d n: print and feed n lines
CHINESE_MODE_ON = bytes([FS, 0x26])  # FS &: two-byte (GB2312/GBK/GB18030) characters
CHINESE_MODE_OFF = bytes([FS, 0x2E])  # FS .: single-byte code page characters
CUT_PARTIAL_AFTER_FEED = bytes([GS, 0x56, 0x42, 0x00])  # GS V 66 0: feed to the cutter, partial cut

# GS V m forms: m in (0, 1, 48, 49) cut where the paper is; m in (65, 66) take one more byte n
# (feed to the cutting position + n units first).
CUT_NOW = frozenset({0x00, 0x01, 0x30, 0x31})
CUT_AFTER_FEED = frozenset({0x41, 0x42})


def status_query(n: int) -> bytes:
    return DLE_EOT + bytes([n])


def recover_command(clear_buffers: bool) -> bytes:
    return DLE_ENQ + bytes([RECOVER_CLEAR_BUFFERS if clear_buffers else RECOVER_RESTART])
