"""Central background work as jobs behind one interface (``Job``), run by one ``JobRunner``."""
