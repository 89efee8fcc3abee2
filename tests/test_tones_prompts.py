"""Tones (SIA DC-05 handshake and kiss-off, DTMF, beeps) and the caller-facing voice prompts."""

from __future__ import annotations

import array
import math
import struct
import wave
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from callcenter import prompts
from callcenter.prompts import ENGLISH, Prompt, prompt_audio
from devices import tones

RATE = 8000
BLOCK_MS = 10
BLOCK = RATE * BLOCK_MS // 1000


def samples(pcm: bytes) -> list[float]:
    """16-bit little-endian PCM as floats in [-1, 1)."""
    data = array.array("h")
    data.frombytes(pcm)
    return [s / 32768 for s in data]


def goertzel(block: list[float], freq: float, rate: int = RATE) -> float:
    """Amplitude of ``freq`` in ``block`` (a full-scale sine on a bin reads about 1.0)."""
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in block:
        s1, s2 = x + coeff * s1 - s2, s1
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / len(block)


def segments(pcm: bytes, freqs: tuple[int, ...]) -> list[tuple[str, int]]:
    """Classify 10 ms blocks as one of ``freqs``, "silence" or "other"; merge runs (label, ms)."""
    x = samples(pcm)
    runs: list[tuple[str, int]] = []
    for start in range(0, len(x), BLOCK):
        block = x[start : start + BLOCK]
        peak = max(abs(v) for v in block)
        if peak < 1e-3:
            label = "silence"
        else:
            amplitudes = {f: goertzel(block, f) for f in freqs}
            best = max(amplitudes, key=lambda f: amplitudes[f])
            others = [a for f, a in amplitudes.items() if f != best]
            dominant = amplitudes[best] > 0.2 and all(a < amplitudes[best] / 4 for a in others)
            label = str(best) if dominant else "other"
        if runs and runs[-1][0] == label:
            runs[-1] = (label, runs[-1][1] + BLOCK_MS)
        else:
            runs.append((label, BLOCK_MS))
    return runs


def peak_dbfs(pcm: bytes) -> float:
    return 20 * math.log10(max(abs(v) for v in samples(pcm)))


# --- tones -----------------------------------------------------------------------------------


def test_handshake_is_1400_hz_silence_2300_hz_100_ms_each() -> None:
    assert segments(tones.handshake(), (1400, 2300)) == [
        ("1400", 100),
        ("silence", 100),
        ("2300", 100),
    ]
    assert len(tones.handshake()) == 300 * RATE // 1000 * 2


def test_kiss_off_is_about_900_ms_of_1400_hz() -> None:
    runs = segments(tones.kiss_off(), (1400, 2300))
    assert [label for label, _ in runs] == ["1400"]
    assert 850 <= runs[0][1] <= 1000


@pytest.mark.parametrize(
    "pcm",
    [
        tones.handshake(),
        tones.kiss_off(),
        tones.beep(),
        tones.beep(440, 123),
        tones.dtmf_tone("7"),
        tones.dtmf_tone("#", 45),
        tones.chime(),
        tones.silence(0),
        tones.silence(13),
    ],
)
def test_lengths_are_whole_16_bit_samples(pcm: bytes) -> None:
    assert len(pcm) % 2 == 0


def test_contact_id_tones_are_whole_rtp_frames_at_about_minus_6_dbfs() -> None:
    for pcm in (tones.handshake(), tones.kiss_off()):
        assert len(pcm) % 320 == 0
        assert -6.5 < peak_dbfs(pcm) <= -5.5


def test_beep_and_silence() -> None:
    beep = tones.beep()
    assert len(beep) == 200 * RATE // 1000 * 2
    assert segments(beep, (1000, 2000)) == [("1000", 200)]
    assert -6.5 < peak_dbfs(beep) <= -5.5
    assert tones.silence(20) == bytes(320)
    with pytest.raises(ValueError):
        tones.beep(5000)
    with pytest.raises(ValueError):
        tones.silence(-1)


def test_tones_are_cached() -> None:
    assert tones.handshake() is tones.handshake()
    assert tones.kiss_off() is tones.kiss_off()
    assert tones.dtmf_tone("1") is tones.dtmf_tone("1")


@pytest.mark.parametrize("digit", list("0123456789*#ABCD"))
def test_dtmf_uses_q23_frequency_pair(digit: str) -> None:
    pcm = tones.dtmf_tone(digit)
    assert len(pcm) == 70 * RATE // 1000 * 2
    x = samples(pcm)
    low, high = tones.DTMF_FREQUENCIES[digit]
    for freq in (*tones.DTMF_LOW_HZ, *tones.DTMF_HIGH_HZ):
        amplitude = goertzel(x, freq)
        if freq in (low, high):
            assert amplitude > 0.15, (digit, freq, amplitude)
        else:
            assert amplitude < 0.05, (digit, freq, amplitude)
    assert peak_dbfs(pcm) < -5.0


def test_dtmf_keypad_matches_q23() -> None:
    assert tones.DTMF_FREQUENCIES["1"] == (697, 1209)
    assert tones.DTMF_FREQUENCIES["5"] == (770, 1336)
    assert tones.DTMF_FREQUENCIES["0"] == (941, 1336)
    assert tones.DTMF_FREQUENCIES["#"] == (941, 1477)
    assert tones.DTMF_FREQUENCIES["D"] == (941, 1633)
    assert tones.dtmf_tone("a") == tones.dtmf_tone("A")
    with pytest.raises(ValueError):
        tones.dtmf_tone("E")


def test_pcmu8_unsigned_maps_silence_to_0x80() -> None:
    assert tones.to_pcmu8_unsigned(tones.silence(20)) == b"\x80" * 160
    extremes = struct.pack("<4h", 32767, -32768, 256, -256)
    assert tones.to_pcmu8_unsigned(extremes) == bytes([0xFF, 0x00, 0x81, 0x7F])
    with pytest.raises(ValueError):
        tones.to_pcmu8_unsigned(b"\x00\x00\x00")


def test_pcmu8_unsigned_equals_pydub_8_bit_plus_bias() -> None:
    pcm = tones.handshake() + tones.dtmf_tone("9")
    segment = tones.AudioSegment(data=pcm, sample_width=2, frame_rate=RATE, channels=1)
    pydub_signed = segment.set_sample_width(1).raw_data
    biased = bytes((b + 128) & 0xFF for b in pydub_signed)
    assert tones.to_pcmu8_unsigned(pcm) == biased


def test_to_pcm16_8k_converts_any_segment() -> None:
    source = tones.AudioSegment.silent(duration=100, frame_rate=44100).set_channels(2)
    assert tones.to_pcm16_8k(source) == bytes(1600)


# --- prompts ---------------------------------------------------------------------------------


@pytest.fixture
def packaged_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(prompts.PROMPT_DIR_ENV, raising=False)


@pytest.mark.usefixtures("packaged_prompts")
@pytest.mark.parametrize("prompt", list(Prompt))
def test_every_prompt_has_mandarin_audio_and_english_text(prompt: Prompt) -> None:
    assert (prompts.DEFAULT_PROMPT_DIR / "zh" / prompt.file_name).is_file()
    pcm = prompt_audio(prompt)
    assert pcm != tones.chime()
    assert len(pcm) % 320 == 0
    assert len(pcm) > RATE * 2  # more than a second of speech
    assert prompt_audio(prompt, "zh") is pcm  # cached
    english = ENGLISH[prompt]
    assert english.isascii() and english.strip()
    assert prompts.text(prompt, "en") == english
    assert prompts.text(prompt) == prompt.value
    assert (prompts.DEFAULT_PROMPT_DIR / "en" / prompt.file_name).is_file()
    assert prompt_audio(prompt, "en") != pcm


def test_packaged_recordings_are_8_khz_mono_16_bit() -> None:
    files = sorted(prompts.DEFAULT_PROMPT_DIR.glob("*/*.wav"))
    assert len(files) == 2 * len(Prompt)
    for path in files:
        with wave.open(str(path), "rb") as wav:
            assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (8000, 1, 2)


def test_wording_is_unique_and_zh_first() -> None:
    assert set(ENGLISH) == set(Prompt)
    assert len({p.value for p in Prompt}) == len(Prompt)
    assert len({p.file_name for p in Prompt}) == len(Prompt)
    assert Prompt.HELP_COMING == "您好，呼援通已收到您的紧急求助，接警员马上与您通话，请不要挂机。"
    assert "一" in Prompt.PRESS_BUTTON and "九" in Prompt.PRESS_BUTTON


def test_missing_recording_falls_back_to_chime_and_warns_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(prompts.PROMPT_DIR_ENV, str(tmp_path))
    with capture_logs() as logs:
        first = prompt_audio(Prompt.TECHNICAL_FAILURE)
        second = prompt_audio(Prompt.TECHNICAL_FAILURE)
    assert first == second == tones.chime()
    assert len(first) % 2 == 0
    assert [entry["event"] for entry in logs] == ["prompt_audio_missing"]
    assert logs[0]["log_level"] == "warning"


def test_unreadable_recording_and_bad_language_fall_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(prompts.PROMPT_DIR_ENV, str(tmp_path))
    (tmp_path / "zh").mkdir()
    (tmp_path / "zh" / Prompt.HELP_COMING.file_name).write_bytes(b"RIFF not really a wave")
    assert prompt_audio(Prompt.HELP_COMING) == tones.chime()
    assert prompt_audio(Prompt.UNIDENTIFIED, "../zh") == tones.chime()


def write_tone_wav(
    path: Path, *, rate: int, channels: int, width: int, freq: float = 1000, ms: int = 500
) -> None:
    """A sine at half scale, written with the standard library (not pydub)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = bytearray()
    full_scale = 2 ** (8 * width - 1) - 1
    for n in range(rate * ms // 1000):
        value = round(0.5 * full_scale * math.sin(2 * math.pi * freq * n / rate))
        if width == 1:
            sample = bytes([value + 128])  # 8-bit WAV is unsigned
        else:
            sample = value.to_bytes(width, "little", signed=True)
        frames += sample * channels
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(channels)
        wav.setsampwidth(width)
        wav.setframerate(rate)
        wav.writeframes(bytes(frames))


@pytest.mark.parametrize(
    ("rate", "channels", "width"),
    [(16000, 2, 2), (44100, 1, 3), (11025, 1, 1), (8000, 1, 2)],
)
def test_site_recording_is_converted_to_8_khz_mono_16_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rate: int, channels: int, width: int
) -> None:
    monkeypatch.setenv(prompts.PROMPT_DIR_ENV, str(tmp_path))
    path = tmp_path / "teochew" / Prompt.HELP_COMING.file_name
    write_tone_wav(path, rate=rate, channels=channels, width=width)
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels(), wav.getsampwidth()) == (
            rate,
            channels,
            width,
        )

    pcm = prompt_audio(Prompt.HELP_COMING, "teochew")

    assert abs(len(pcm) - 500 * RATE // 1000 * 2) <= 320  # 500 ms at 8 kHz, padded to a frame
    assert len(pcm) % 320 == 0
    x = samples(pcm)[: 400 * RATE // 1000]
    assert goertzel(x, 1000) == pytest.approx(0.5, abs=0.05)
    assert goertzel(x, 2000) < 0.05


def test_missing_language_falls_back_to_mandarin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(prompts.PROMPT_DIR_ENV, str(tmp_path))
    write_tone_wav(
        tmp_path / "zh" / Prompt.CANCEL_RECEIVED.file_name, rate=8000, channels=1, width=2
    )
    with capture_logs() as logs:
        pcm = prompt_audio(Prompt.CANCEL_RECEIVED, "teochew")
    assert pcm == prompt_audio(Prompt.CANCEL_RECEIVED, "zh") != tones.chime()
    assert [entry["event"] for entry in logs] == ["prompt_language_missing"]
