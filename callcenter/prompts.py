"""Every word the centre says to a caller: the one place for caller-facing wording.

Chinese (zh-CN, Mandarin) first: the value of each :class:`Prompt` is the text spoken. English
second, in :data:`ENGLISH`. Change the wording here and regenerate the recordings with
``scripts/make_prompts.py`` (see that script for how a site records its own voice).

Audio comes from ``<prompt_dir>/<language>/<name>.wav``, ``<name>`` being the member name in
lower case (``help_coming.wav``). ``prompt_dir`` is the package folder
``callcenter/prompt_audio/`` unless ``HYT_PROMPT_DIR`` names another one, so that a site can
add, say, a Teochew (潮州话) recording as ``teochew/help_coming.wav`` and call with
``language="teochew"``. Any PCM WAV (any rate, width, channel count) is converted to the call
interface's format: 16-bit signed little-endian, 8 kHz, mono.

A prompt never fails a call: a missing or unreadable recording falls back to the Mandarin one,
then to a short two-tone chime, and a warning is logged once.
"""

from __future__ import annotations

import functools
import os
import re
from enum import StrEnum
from pathlib import Path

import structlog

from devices import tones

log = structlog.get_logger(__name__)

PROMPT_DIR_ENV = "HYT_PROMPT_DIR"
DEFAULT_PROMPT_DIR = Path(__file__).resolve().parent / "prompt_audio"
DEFAULT_LANGUAGE = "zh"
# A language is a folder name: letters, digits, "_" and "-" only (no path tricks).
_LANGUAGE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

FRAME_BYTES = 320  # 20 ms at 8 kHz 16-bit, as callcenter.sip.interface.FRAME_BYTES


class Prompt(StrEnum):
    """What the centre says, in Mandarin. The member name is the recording's file name."""

    HELP_COMING = "您好，呼援通已收到您的紧急求助，接警员马上与您通话，请不要挂机。"
    SERVICE_RECEIVED = "您好，呼援通已收到您的服务请求，我们会尽快安排志愿者上门。"
    CONSULT_RECEIVED = "您好，呼援通已收到您的咨询，工作人员会尽快给您回电。"
    CANCEL_RECEIVED = "已收到取消，接警员稍后会回电确认您的安全。"
    UNIDENTIFIED = "您好，这里是呼援通，请不要挂机，接警员马上与您通话。"
    PRESS_BUTTON = "请按键：一，紧急求助；二，服务请求；三，咨询；九，取消。"
    TECHNICAL_FAILURE = "系统繁忙，请稍后再拨。"

    @property
    def file_name(self) -> str:
        return f"{self.name.lower()}.wav"


ENGLISH: dict[Prompt, str] = {
    Prompt.HELP_COMING: (
        "Hello, HuYuanTong has received your emergency call for help. "
        "An operator will speak with you right away. Please do not hang up."
    ),
    Prompt.SERVICE_RECEIVED: (
        "Hello, HuYuanTong has received your service request. "
        "We will arrange for a volunteer to visit you as soon as possible."
    ),
    Prompt.CONSULT_RECEIVED: (
        "Hello, HuYuanTong has received your enquiry. "
        "Our staff will call you back as soon as possible."
    ),
    Prompt.CANCEL_RECEIVED: (
        "Your cancellation has been received. "
        "An operator will call you back shortly to make sure you are safe."
    ),
    Prompt.UNIDENTIFIED: (
        "Hello, this is HuYuanTong. Please do not hang up. "
        "An operator will speak with you right away."
    ),
    Prompt.PRESS_BUTTON: (
        "Please press a key: one, emergency help; two, service request; three, enquiry; "
        "nine, cancel."
    ),
    Prompt.TECHNICAL_FAILURE: "The system is busy. Please call again later.",
}


def text(prompt: Prompt, language: str = DEFAULT_LANGUAGE) -> str:
    """The wording of ``prompt``: English for ``en``, otherwise the Chinese text.

    Chinese dialects (Teochew, Cantonese) are written with the same characters, so a site's
    recording in dialect reads from the Chinese text.
    """
    return ENGLISH[prompt] if language.lower() == "en" else prompt.value


def prompt_dir() -> Path:
    """Where recordings are looked up: ``$HYT_PROMPT_DIR`` or the packaged folder."""
    configured = os.environ.get(PROMPT_DIR_ENV, "").strip()
    return Path(configured).expanduser() if configured else DEFAULT_PROMPT_DIR


def prompt_audio(prompt: Prompt, language: str = DEFAULT_LANGUAGE) -> bytes:
    """``prompt`` as 16-bit signed little-endian PCM, 8 kHz, mono, in whole 20 ms frames.

    Looks for ``<prompt_dir>/<language>/<name>.wav``, then the Mandarin recording, then
    returns the chime. Loaded once per (folder, language, prompt) and cached.
    """
    return _load(prompt, language.strip().lower(), prompt_dir().resolve())


def preload(languages: tuple[str, ...] = (DEFAULT_LANGUAGE,)) -> None:
    """Load every prompt now (at start-up), so that no call waits on the disk or logs late."""
    for language in languages:
        for prompt in Prompt:
            prompt_audio(prompt, language)


def clear_cache() -> None:
    """Forget loaded recordings (after a site replaced files on disk)."""
    _load.cache_clear()


@functools.cache
def _load(prompt: Prompt, language: str, folder: Path) -> bytes:
    if not _LANGUAGE_RE.match(language):
        log.warning("prompt_language_invalid", language=language, using=DEFAULT_LANGUAGE)
        language = DEFAULT_LANGUAGE
    candidates = [language] if language == DEFAULT_LANGUAGE else [language, DEFAULT_LANGUAGE]
    for candidate in candidates:
        path = folder / candidate / prompt.file_name
        pcm = _read_wav(path)
        if pcm is not None:
            if candidate != language:
                log.warning(
                    "prompt_language_missing",
                    prompt=prompt.name,
                    language=language,
                    using=candidate,
                    path=str(folder / language / prompt.file_name),
                )
            return pcm
    log.warning(
        "prompt_audio_missing",
        prompt=prompt.name,
        language=language,
        path=str(folder / language / prompt.file_name),
        using="chime",
    )
    return tones.chime()


def _read_wav(path: Path) -> bytes | None:
    """A PCM WAV file converted for the call interface; None if absent or unreadable."""
    if not path.is_file():
        return None
    try:
        # Read the WAV directly (no ffmpeg): PCM 8/16/24/32-bit, any rate and channel count.
        segment = tones.AudioSegment(data=path.read_bytes())
        pcm = tones.to_pcm16_8k(segment)
    except Exception as exc:  # a bad file must never fail a call
        log.warning("prompt_audio_unreadable", path=str(path), error=repr(exc))
        return None
    if not pcm:
        log.warning("prompt_audio_empty", path=str(path))
        return None
    return pcm + bytes(-len(pcm) % FRAME_BYTES)  # pad with silence to whole frames
