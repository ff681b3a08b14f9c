"""The centre's REST API and the IT section's web dashboard (``hallfleet api``)."""
