"""The importers behind ``hyt import KIND``."""

from __future__ import annotations

from callcenter.elder_import import ElderImporter
from callcenter.importing import Importer
from devices.terminal_import import TerminalImporter
from volunteers.volunteer_import import VolunteerImporter


def importer_for(kind: str) -> Importer:
    importers: dict[str, Importer] = {
        "elders": ElderImporter(),
        "volunteers": VolunteerImporter(),
        "terminals": TerminalImporter(),
    }
    return importers[kind]
