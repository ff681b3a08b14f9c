"""The hall's queue system (排队叫号): ticket dispensers and call displays, read through the queue PC's local API.

- ``record``: QueueRecord (one step of one ticket), the adapter interface ``QueueSystem`` (one required method,
  ``records(after, limit)``), BadRecord and QueueSystemError
- ``http``: HttpQueueConfig + HttpQueueSystem, the queue PC's local HTTP API
- ``sim``: SimQueueSystem, the twin: a queue system that serves that API for real and binds the rating pads
"""

from typing import Annotated

from pydantic import Field

from drivers.queue.http import HttpQueueConfig, HttpQueueSystem
from drivers.queue.record import BadRecord, QueueRecord, QueueSystem, QueueSystemError
from drivers.queue.sim import SimQueueConfig, SimQueueSystem

QueueDriverConfig = Annotated[HttpQueueConfig | SimQueueConfig, Field(discriminator="type")]

__all__ = [
    "BadRecord",
    "HttpQueueConfig",
    "HttpQueueSystem",
    "QueueDriverConfig",
    "QueueRecord",
    "QueueSystem",
    "QueueSystemError",
    "SimQueueConfig",
    "SimQueueSystem",
]
