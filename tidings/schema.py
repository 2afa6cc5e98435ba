"""Imports every model module so `Base.metadata` holds the whole schema (for Alembic and tests)."""

from campaigns import models as campaigns_models  # noqa: F401
from segments import models as segments_models  # noqa: F401
from tidings import models as tidings_models  # noqa: F401
from tidings.db import Base

metadata = Base.metadata
