"""RS-485 field buses of the 24-hour area (door controllers, locker boards): one framing, one port, one twin.

- ``frame``: STX addr cmd len data BCC ETX, the layout the halls' controller boards share (checked by XOR)
- ``port``: a serial port opened raw with termios (a USB RS-485 adapter's /dev/ttyUSB0, or a pty)
- ``twin``: a simulated board on the master side of a pty pair, so the real driver talks to a real tty
"""
