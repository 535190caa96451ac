"""Market-data loaders for fault injection through settings.CLM_DATA_LOADER, the pipeline's seam
for where bars come from (tests set it to "tests.loaders.<name>")."""

from __future__ import annotations

import logging
from datetime import datetime

from training.data.bars import fetch_training_data
from training.data.dataset import Bars

logger = logging.getLogger(__name__)


def logging_loader(
    symbol: str, timeframe: str, window: tuple[datetime | None, datetime | None] | None
) -> Bars:
    """The default loader, logging a line first as a module that knows nothing of the job."""
    logger.info("reading bars")
    return fetch_training_data(symbol, timeframe, window)


def failing_loader(
    symbol: str, timeframe: str, window: tuple[datetime | None, datetime | None] | None
) -> Bars:
    """A market-data feed that is down."""
    raise RuntimeError("feed down\nsecond line")
