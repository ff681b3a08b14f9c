"""Rules: what the stored events mean. Incidents and their SLA clock, consumables, maintenance cadence."""
