"""Pipecat logs every pipeline's life at DEBUG through loguru; the tests want warnings only."""

import sys

from loguru import logger

logger.remove()
logger.add(sys.stderr, level="WARNING")
