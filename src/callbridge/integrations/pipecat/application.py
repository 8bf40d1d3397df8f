"""A pipeline factory as a callbridge `Application`: one Pipecat pipeline per call.

``callbridge serve mymodule:app`` then serves the pipeline with the same authentication and
settings as any application, because it is one. A pipeline that breaks ends its call rather than
leaving the caller in silence: an uncaught exception in a processor, or an error that left a
processor unusable, cancels the pipeline and hangs up with the reason ``"pipeline error"``;
errors Pipecat reports as transient (a rate limit, a lost connection to a service) leave the
call up, as Pipecat does.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.frames.frames import ErrorFrame
from pipecat.pipeline.worker import PipelineWorker
from pipecat.utils.errors import ErrorCategory
from pipecat.workers.runner import WorkerRunner

from callbridge.rtvbp.application import Application, Call
from callbridge.rtvbp.errors import RtvbpError

logger = logging.getLogger(__name__)

PipelineFactory = Callable[[Call], Awaitable[PipelineWorker]]
"""``async def bot(call) -> PipelineWorker``: builds the pipeline for one call."""

PIPELINE_ERROR = "pipeline error"
"""The hang-up reason when a pipeline breaks."""


def ends_the_call(frame: ErrorFrame) -> bool:
    """Whether an error reported by the pipeline is one the call cannot continue after.

    True for an uncaught exception in a processor (Pipecat reports those with the exception and
    an unknown cause), an error that left its processor unusable, and a fatal error.
    """
    if frame.fatal:
        return True
    if frame.processor is not None and not frame.processor.is_usable:
        return True
    return frame.exception is not None and frame.category is ErrorCategory.UNKNOWN


async def run_pipeline(worker: PipelineWorker, call: Call, *, hangup_on_error: bool = True) -> None:
    """Run `worker` for `call` until the pipeline ends (see `ends_the_call` for errors).

    For handlers that do more than run one pipeline; `pipecat_application` calls this.
    """
    failures: list[ErrorFrame] = []

    async def on_pipeline_error(worker: PipelineWorker, frame: ErrorFrame) -> None:
        if not hangup_on_error or not ends_the_call(frame) or failures:
            return
        failures.append(frame)
        logger.error(
            "call %s: %s in %s: %s",
            call.info.id,
            PIPELINE_ERROR,
            frame.processor,
            frame.error,
            exc_info=frame.exception,
        )
        await worker.cancel(reason=PIPELINE_ERROR)

    worker.add_event_handler("on_pipeline_error", on_pipeline_error)
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    await runner.run()
    if failures and not call.ended:
        try:
            await call.hangup(PIPELINE_ERROR)
        except RtvbpError as error:
            logger.debug("call %s: hang-up after a pipeline error failed: %r", call.info.id, error)


def pipecat_application(
    factory: PipelineFactory, *, hangup_on_error: bool = True, **options: Any
) -> Application:
    """An `Application` that runs ``await factory(call)`` for every call.

    `options` are `Application`'s (``choose_codec``, ``request_timeout_s``, ...); ``callbridge
    serve`` sets authentication and timeouts from its configuration, as for any application.
    """

    async def handler(call: Call) -> None:
        worker = await factory(call)
        await run_pipeline(worker, call, hangup_on_error=hangup_on_error)

    return Application(handler, **options)
