"""Call recordings: two directions kept in step with the clock, mixed into one stereo WAV."""

from __future__ import annotations

import array
import wave
from pathlib import Path

from callcenter.recordings import (
    CallRecorder,
    mix_to_wav,
    raw_path,
    recording_path,
    recording_stem,
)

FRAME = array.array("h", [1000] * 160).tobytes()  # 20 ms of a constant non-zero level


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_both_sides_stay_in_step_and_mix_to_stereo(tmp_path: Path) -> None:
    clock = Clock()
    recorder = CallRecorder(tmp_path, recording_stem(7), clock=clock)
    recorder.open()
    # 0-1 s: the elder talks; the operator starts at 0.5 s; the elder pauses 0.5-0.8 s
    # (silence suppression: no packets at all).
    for n in range(1, 51):
        clock.now = 100.0 + n * 0.02
        if not 0.5 < n * 0.02 <= 0.8:
            recorder.write("elder", FRAME)
        if n * 0.02 > 0.5:
            recorder.write("operator", FRAME)
    recorder.close()
    assert raw_path(tmp_path, "voice-000007", "elder").exists()

    mixed = mix_to_wav(tmp_path, "voice-000007")
    assert mixed is not None
    name, seconds = mixed
    assert name == "voice-000007.wav" and abs(seconds - 1.0) < 0.03
    assert not raw_path(tmp_path, "voice-000007", "elder").exists()  # only the WAV is kept
    with wave.open(str(tmp_path / name)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        samples = array.array("h", w.readframes(w.getnframes()))
    elder, operator = samples[0::2], samples[1::2]

    def level_at(channel: array.array[int], t: float) -> int:
        return channel[int(t * 8000)]

    assert level_at(elder, 0.2) == 1000 and level_at(operator, 0.2) == 0
    assert level_at(elder, 0.65) == 0 and level_at(operator, 0.65) == 1000  # the pause
    assert level_at(elder, 0.9) == 1000 and level_at(operator, 0.9) == 1000


def test_nothing_recorded_leaves_nothing(tmp_path: Path) -> None:
    recorder = CallRecorder(tmp_path, recording_stem(8))
    recorder.open()
    recorder.close()
    assert mix_to_wav(tmp_path, recording_stem(8)) is None
    assert list(tmp_path.iterdir()) == []


def test_recording_path_takes_only_our_names(tmp_path: Path) -> None:
    (tmp_path / "voice-000001.wav").write_bytes(b"x")
    assert recording_path(tmp_path, "voice-000001.wav") == tmp_path / "voice-000001.wav"
    for bad in ("../voice-000001.wav", "voice-000001.raw", "/etc/passwd", "a/b.wav", ".wav"):
        assert recording_path(tmp_path, bad) is None, bad
    assert recording_path(tmp_path, "voice-000002.wav") is None  # not on disk
