"""The demo.v1 catalog (profile ``rtvbp.demo.v1``): one echo operation and one event, no media.

A throwaway catalog that exists to prove catalogs are pluggable; it shares the classic.v1 envelope.
"""

from __future__ import annotations

from callbridge.rtvbp.catalog import (
    Catalog,
    EventSpec,
    OperationSpec,
    PayloadStruct,
    Role,
    require_min_length,
)


class DemoEchoRequest(PayloadStruct, frozen=True):
    message: str

    def __post_init__(self) -> None:
        require_min_length("message", self.message)


class DemoEchoResponse(PayloadStruct, frozen=True):
    """The request's ``message``, returned unchanged by the application."""

    message: str

    def __post_init__(self) -> None:
        require_min_length("message", self.message)


class DemoObservedEvent(PayloadStruct, frozen=True):
    """Sent by the application after it completed an echo."""

    message: str

    def __post_init__(self) -> None:
        require_min_length("message", self.message)


CATALOG = Catalog.build(
    "demo.v1",
    operations=(
        OperationSpec("demo.echo", Role.APPLICATION, False, DemoEchoRequest, DemoEchoResponse),
    ),
    events=(EventSpec("demo.observed", Role.APPLICATION, DemoObservedEvent),),
)
