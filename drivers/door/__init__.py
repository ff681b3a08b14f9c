"""The 24-hour area's door controller (智能门禁, SJ 001 表9): contacts, lock relay and counters over RS-485.

- ``controller``: the driver (``DoorController.status()``, ``unlock()``), config ``type = "serial"``
- ``sim``: its twin, a controller on a pty pair with doors people open, hold, force and close
"""
