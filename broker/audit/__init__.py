"""Tamper-evident records at the centre: hash chains over the audit log and the attendance corrections
(chain.py), their verification (verify.py) and ``hallfleet audit verify`` (cli.py)."""
