"""pushpop: a message queue that lives in PostgreSQL."""

import logging

from .async_client import AsyncClient, AsyncMessage
from .async_worker import AsyncWorker
from .client import Client, Message
from .errors import (
    ClientClosed,
    DatabaseError,
    Error,
    InvalidArgument,
    InvalidType,
    LeaseLost,
    MigrationError,
    NotInstalled,
    PayloadTooLarge,
    PermissionDenied,
    Unavailable,
)
from .message import ScheduleInfo, SubscriptionInfo, TopicStats, WorkerInfo
from .retry import Retry
from .worker import Worker

__all__ = [
    "AsyncClient",
    "AsyncMessage",
    "AsyncWorker",
    "Client",
    "ClientClosed",
    "DatabaseError",
    "Error",
    "InvalidArgument",
    "InvalidType",
    "LeaseLost",
    "Message",
    "MigrationError",
    "NotInstalled",
    "PayloadTooLarge",
    "PermissionDenied",
    "Retry",
    "ScheduleInfo",
    "SubscriptionInfo",
    "TopicStats",
    "Unavailable",
    "Worker",
    "WorkerInfo",
]
__version__ = "0.1.0"

# A library stays quiet unless the application configures logging.
logging.getLogger("pushpop").addHandler(logging.NullHandler())
