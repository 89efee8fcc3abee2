"""Terminal models and their button maps, read from ``devices/terminal_models.toml``."""

from __future__ import annotations

import functools
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from devices.models import TerminalProtocol

MODELS_PATH = Path(__file__).with_name("terminal_models.toml")
BUTTONS = ("sos", "service", "consult", "cancel")


@dataclass(frozen=True)
class TerminalModel:
    name: str
    description: str
    protocol: TerminalProtocol
    report_interval_s: int
    buttons: dict[str, str] = field(default_factory=dict)


def load_models(path: Path = MODELS_PATH) -> dict[str, TerminalModel]:
    with path.open("rb") as fh:
        data = tomllib.load(fh)
    models: dict[str, TerminalModel] = {}
    for name, raw in data.get("models", {}).items():
        buttons = {str(k): str(v) for k, v in raw.get("buttons", {}).items()}
        unknown = set(buttons.values()) - set(BUTTONS)
        if unknown:
            raise ValueError(f"terminal model {name}: unknown buttons {sorted(unknown)}")
        models[name] = TerminalModel(
            name=name,
            description=str(raw.get("description", "")),
            protocol=TerminalProtocol(raw["protocol"]),
            report_interval_s=int(raw.get("report_interval_s", 86400)),
            buttons=buttons,
        )
    return models


@functools.lru_cache(maxsize=1)
def known_models() -> dict[str, TerminalModel]:
    return load_models()
