"""Import every model module, so that the metadata (and Alembic) sees every table."""

from callcenter import models as callcenter_models
from callcenter import voice_models
from callcenter.db import Base
from devices import models as devices_models
from schedules import models as schedules_models
from volunteers import models as volunteers_models
from volunteers import sms_inbound

__all__ = [
    "Base",
    "callcenter_models",
    "devices_models",
    "schedules_models",
    "sms_inbound",
    "voice_models",
    "volunteers_models",
]
