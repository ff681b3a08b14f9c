"""The self-service locker bank (自助寄取柜, SJ 001 表9): a lock board on RS-485 with a door switch and an
item sensor per compartment.

- ``board``: the driver (``LockerBoard.status()``, ``open()``), config ``type = "serial"``
- ``sim``: its twin, a board on a pty pair with compartments people fill and empty
"""
