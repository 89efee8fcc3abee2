"""Call recordings: both directions of an operator–elder call, written to disk as they arrive
and mixed with pydub into one WAV when the call ends.

Written as they arrive (two raw files, buffered) rather than kept in memory: an hour's call is
115 MB of PCM, and if the handler dies mid-call the audio so far is on disk and is mixed when
it starts again (nothing lost). The WAV is stereo, the elder on the left and the operator on
the right: one file that plays everywhere, and each voice can still be heard on its own.
"""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Literal

with warnings.catch_warnings():
    # As in devices/tones.py: pydub warns about ffmpeg (WAV needs none) and audioop.
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment

SAMPLE_RATE = 8000  # the call interface's audio: 16-bit signed little-endian, 8 kHz, mono
SAMPLE_WIDTH = 2
Side = Literal["elder", "operator"]
SIDES: tuple[Side, ...] = ("elder", "operator")
# A stream that fell this far behind the wall clock had a gap (silence suppression, loss):
# fill it with silence so that the two sides stay in step.
SLACK_BYTES = int(0.06 * SAMPLE_RATE) * SAMPLE_WIDTH
_STEM_RE = re.compile(r"^[A-Za-z0-9_-]{1,80}$")


def recording_stem(voice_call_id: int) -> str:
    return f"voice-{voice_call_id:06d}"


def raw_path(directory: Path, stem: str, side: Side) -> Path:
    return directory / f"{stem}.{side}.raw"


class CallRecorder:
    """Two raw 16-bit 8 kHz mono streams on disk, kept aligned to one clock."""

    def __init__(
        self, directory: Path, stem: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not _STEM_RE.match(stem):
            raise ValueError(f"bad recording name {stem!r}")
        self.directory = directory
        self.stem = stem
        self._clock = clock
        self._files: dict[Side, BinaryIO] = {}
        self._written: dict[Side, int] = dict.fromkeys(SIDES, 0)
        self._t0: float | None = None

    def open(self) -> None:
        """Create the files (blocking: call it off the event loop)."""
        self.directory.mkdir(parents=True, exist_ok=True)
        for side in SIDES:
            self._files[side] = raw_path(self.directory, self.stem, side).open(
                "ab", buffering=1 << 16
            )

    def write(self, side: Side, pcm: bytes) -> None:
        """One chunk heard from ``side``, just now. Cheap: buffered, flushed every ~4 s."""
        handle = self._files.get(side)
        if handle is None or not pcm:
            return
        now = self._clock()
        if self._t0 is None:
            self._t0 = now
        # Where this chunk starts on the common time line, in bytes.
        expected = int((now - self._t0) * SAMPLE_RATE) * SAMPLE_WIDTH - len(pcm)
        behind = expected - self._written[side]
        if behind > SLACK_BYTES:
            handle.write(bytes(behind))
            self._written[side] += behind
        handle.write(pcm)
        self._written[side] += len(pcm)

    def close(self) -> None:
        for handle in self._files.values():
            handle.close()
        self._files.clear()


def mix_to_wav(directory: Path, stem: str) -> tuple[str, float] | None:
    """Mix the two raw streams of ``stem`` into ``<stem>.wav`` (stereo: elder left, operator
    right) and remove them. Returns the file name and its duration, or None if nothing was
    recorded. Blocking: call it off the event loop."""
    raws = [raw_path(directory, stem, side) for side in SIDES]
    data = [path.read_bytes() if path.exists() else b"" for path in raws]
    frames = max(len(d) for d in data) // SAMPLE_WIDTH
    if frames == 0:
        for path in raws:
            path.unlink(missing_ok=True)
        return None
    channels = [
        AudioSegment(
            data=d[: frames * SAMPLE_WIDTH].ljust(frames * SAMPLE_WIDTH, b"\x00"),
            sample_width=SAMPLE_WIDTH,
            frame_rate=SAMPLE_RATE,
            channels=1,
        )
        for d in data
    ]
    stereo = AudioSegment.from_mono_audiosegments(*channels)
    name = f"{stem}.wav"
    partial = directory / f"{stem}.wav.part"
    stereo.export(str(partial), format="wav")
    partial.replace(directory / name)  # never a half-written WAV under the real name
    for path in raws:
        path.unlink(missing_ok=True)
    return name, frames / SAMPLE_RATE


def recording_path(directory: Path, name: str) -> Path | None:
    """The recording ``name`` inside ``directory``, or None if the name is not one of ours
    (no path tricks: only names this module writes)."""
    if not name.endswith(".wav") or not _STEM_RE.match(name.removesuffix(".wav")):
        return None
    path = directory / name
    return path if path.is_file() else None
