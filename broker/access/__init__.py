"""The centre's side of the 24-hour area's doors and lockers (SJ 001 表9): their alarms as conditions of the
one-outage incident (``signals``), compartments left occupied too long (``lockers``)."""
