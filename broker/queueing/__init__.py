"""Queue ticketing (排队叫号) at the centre: the ticket steps the dispensers and call displays report
(``queue.*`` events) folded into waits per ticket and service (``fold.py``), the waiting-time rule of QP 000:368
「10,30,60」 as alerts while a ticket waits past its class's limit (``rule.py``, ``jobs.py``) and as a monthly
report per service and window (``report.py``), and the dashboard's queue view (broker/api/queue_view.py).

This package is imported by ``broker.sites`` for ``SiteConfig.queueing``: keep this module and ``policy`` free
of imports from the rest of the broker.
"""

from broker.queueing.policy import QueuePolicy

__all__ = ["QueuePolicy"]
