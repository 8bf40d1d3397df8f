"""Pipecat pipelines on RTVBP calls: one `callbridge.Call` becomes a Pipecat transport.

```python
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineWorker

import callbridge
from callbridge.integrations.pipecat import CallbridgeTransport, pipecat_application


async def bot(call: callbridge.Call) -> PipelineWorker:
    transport = CallbridgeTransport(call)
    return PipelineWorker(Pipeline([transport.input(), ..., transport.output()]))


app = pipecat_application(bot)     # callbridge serve mymodule:app
```

Needs the ``pipecat`` extra: ``pip install 'callbridge[pipecat]'``.
"""

try:
    import pipecat  # noqa: F401
except ModuleNotFoundError as error:  # pragma: no cover - depends on the install
    raise ModuleNotFoundError(
        "callbridge.integrations.pipecat needs Pipecat: pip install 'callbridge[pipecat]'"
    ) from error

from callbridge.integrations.pipecat.application import (
    PIPELINE_ERROR,
    PipelineFactory,
    ends_the_call,
    pipecat_application,
    run_pipeline,
)
from callbridge.integrations.pipecat.transcripts import TranscriptObserver
from callbridge.integrations.pipecat.transport import (
    CallbridgeInputTransport,
    CallbridgeOutputTransport,
    CallbridgeParams,
    CallbridgeTransport,
)

__all__ = [
    "PIPELINE_ERROR",
    "CallbridgeInputTransport",
    "CallbridgeOutputTransport",
    "CallbridgeParams",
    "CallbridgeTransport",
    "PipelineFactory",
    "TranscriptObserver",
    "ends_the_call",
    "pipecat_application",
    "run_pipeline",
]
