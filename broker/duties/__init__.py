"""Daily duties the devices can prove (issue 23, docs/hall-duties.md): the kiosks' own network check
(``netcheck``), the departmental machines' daily power-on and power-off (``power``), the duty officers' patrol
rounds (``patrol``); the site's settings (``policy``), the consumer's timer (``jobs``), the monthly workbook
(``report``). Verdicts are recomputed from the stored events every time, never stored: an event that arrives
late (a check taken while the network was down) changes the day's verdict, as punches do for attendance."""
