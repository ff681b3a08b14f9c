"""好差评 at the centre: ratings from the window pads (immutable ``rating.submitted`` events) -> proxy-rating flags
for review, negative-rating follow-ups (reply, rectification) with their deadlines, pause alerts, and the monthly
statistics against SJ's 100 % targets (requirements-from-regulations.md §3, §11.3-§11.6).

Nothing here changes or drops a rating: a suspicious one is flagged for a person to review, and the statistics
leave out only what a reviewer confirmed as a proxy rating, and say how many.

This package is imported by ``broker.sites`` for ``SiteConfig.ratings``: keep this module and ``policy`` free of
imports from the rest of the broker.
"""

from broker.ratings.policy import RatingPolicy

__all__ = ["RatingPolicy"]
