"""Tones the centre plays to terminals and callers, as PCM for the call interface.

Everything returned here is what :mod:`callcenter.sip.interface` carries: 16-bit signed
little-endian PCM, 8 kHz, mono (320 bytes = 20 ms). :func:`to_pcmu8_unsigned` makes the 8-bit
*unsigned* linear audio that pyVoIP's ``write_audio`` takes.

Contact ID timings follow SIA DC-05 (Ademco Contact ID), as Asterisk's receiver
(``apps/app_alarmreceiver.c``) implements them:

* receiver handshake on answer: 1400 Hz for 100 ms, 100 ms silence, 2300 Hz for 100 ms;
* kiss-off after a valid message: 1400 Hz for about 900 ms (DC-05: 750-1000 ms).

Tones are generated with :class:`pydub.generators.Sine` and cached: each function returns the
same immutable ``bytes`` on every call. Levels are about -6 dBFS peak so that the G.711 encoder
never clips. pydub is used only on raw and WAV data here, which it handles without ffmpeg.
"""

from __future__ import annotations

import functools
import warnings

with warnings.catch_warnings():
    # pydub warns at import that ffmpeg is missing (we never need it: no compressed formats) and
    # Python 3.11/3.12 warn that audioop is deprecated (pydub's dependency; audioop-lts on 3.13).
    warnings.simplefilter("ignore", RuntimeWarning)
    warnings.simplefilter("ignore", DeprecationWarning)
    from pydub import AudioSegment
    from pydub.generators import Sine

SAMPLE_RATE = 8000  # same as callcenter.sip.interface.SAMPLE_RATE
SAMPLE_WIDTH = 2  # bytes: 16-bit signed little-endian
CHANNELS = 1

TONE_LEVEL_DBFS = -6.0
RAMP_MS = 4  # linear fade in/out against clicks (spectral splatter) at tone edges

# SIA DC-05 receiver handshake and kiss-off (Contact ID).
HANDSHAKE_LOW_HZ = 1400
HANDSHAKE_HIGH_HZ = 2300
HANDSHAKE_TONE_MS = 100
HANDSHAKE_GAP_MS = 100
KISS_OFF_HZ = 1400
KISS_OFF_MS = 900

# ITU-T Q.23: DTMF is one frequency of the low group plus one of the high group.
DTMF_LOW_HZ = (697, 770, 852, 941)
DTMF_HIGH_HZ = (1209, 1336, 1477, 1633)
_DTMF_KEYPAD = ("123A", "456B", "789C", "*0#D")
DTMF_FREQUENCIES: dict[str, tuple[int, int]] = {
    key: (DTMF_LOW_HZ[row], DTMF_HIGH_HZ[col])
    for row, keys in enumerate(_DTMF_KEYPAD)
    for col, key in enumerate(keys)
}
# Per component, so that the sum peaks near -6 dBFS. The high group is 2 dB louder, the
# positive "twist" that telephones use and that DTMF receivers expect (Q.24 tolerances).
DTMF_LOW_LEVEL_DBFS = -13.0
DTMF_HIGH_LEVEL_DBFS = -11.0

CHIME_HZ = (880, 660)  # "ding-dong", stands in for a missing voice prompt
CHIME_TONE_MS = 250

# Two's-complement signed byte -> offset-binary unsigned byte: add 128 modulo 256 (flip bit 7).
_SIGNED_TO_UNSIGNED = bytes((value + 128) & 0xFF for value in range(256))


def to_pcm16_8k(segment: AudioSegment) -> bytes:
    """Any pydub segment as 16-bit signed little-endian PCM, 8 kHz, mono."""
    converted = segment.set_channels(CHANNELS).set_sample_width(SAMPLE_WIDTH)
    converted = converted.set_frame_rate(SAMPLE_RATE)
    return bytes(converted.raw_data)


def to_pcmu8_unsigned(pcm16: bytes) -> bytes:
    """16-bit signed little-endian PCM as 8-bit *unsigned* linear PCM (pyVoIP's write_audio).

    Same result as pydub's ``set_sample_width(1)`` (``audioop.lin2lin``: keep the high byte,
    8-bit *signed*) followed by the +128 bias, but needs no ``audioop`` (gone in Python 3.13):
    the high byte of each little-endian sample is every odd byte. Silence (0) becomes 0x80.
    """
    if len(pcm16) % SAMPLE_WIDTH:
        raise ValueError(f"16-bit PCM must have an even length, got {len(pcm16)} bytes")
    return pcm16[1::2].translate(_SIGNED_TO_UNSIGNED)


def _sine(freq: float, ms: int, level_dbfs: float) -> AudioSegment:
    return Sine(freq, sample_rate=SAMPLE_RATE, bit_depth=SAMPLE_WIDTH * 8).to_audio_segment(
        duration=ms, volume=level_dbfs
    )


def _ramped(segment: AudioSegment) -> AudioSegment:
    ramp = min(RAMP_MS, len(segment) // 4)
    return segment.fade_in(ramp).fade_out(ramp) if ramp > 0 else segment


def _silent(ms: int) -> AudioSegment:
    return AudioSegment.silent(duration=ms, frame_rate=SAMPLE_RATE)


def _check_ms(ms: int) -> None:
    if ms < 0:
        raise ValueError(f"duration must not be negative, got {ms} ms")


@functools.cache
def silence(ms: int) -> bytes:
    """``ms`` milliseconds of digital silence."""
    _check_ms(ms)
    return to_pcm16_8k(_silent(ms))


@functools.cache
def beep(freq: int = 1000, ms: int = 200) -> bytes:
    """A single sine tone at about -6 dBFS."""
    _check_ms(ms)
    if not 0 < freq < SAMPLE_RATE / 2:
        raise ValueError(f"frequency must be between 0 and {SAMPLE_RATE // 2} Hz, got {freq}")
    return to_pcm16_8k(_ramped(_sine(freq, ms, TONE_LEVEL_DBFS)))


@functools.cache
def handshake() -> bytes:
    """SIA DC-05 (Contact ID) receiver handshake: 1400 Hz 100 ms, 100 ms silence, 2300 Hz 100 ms.

    Sent on answer; the panel then transmits its 16-digit DTMF message. 300 ms = 15 frames.
    """
    low = _ramped(_sine(HANDSHAKE_LOW_HZ, HANDSHAKE_TONE_MS, TONE_LEVEL_DBFS))
    high = _ramped(_sine(HANDSHAKE_HIGH_HZ, HANDSHAKE_TONE_MS, TONE_LEVEL_DBFS))
    return to_pcm16_8k(low + _silent(HANDSHAKE_GAP_MS) + high)


@functools.cache
def kiss_off() -> bytes:
    """SIA DC-05 (Contact ID) kiss-off: 1400 Hz for about 900 ms.

    Tells the panel its message was received. Send it only after the alarm is committed to the
    database: a panel that heard the kiss-off will not send that message again.
    """
    return to_pcm16_8k(_ramped(_sine(KISS_OFF_HZ, KISS_OFF_MS, TONE_LEVEL_DBFS)))


@functools.cache
def dtmf_tone(digit: str, ms: int = 70) -> bytes:
    """One DTMF digit (``0-9 * # A-D``) as in-band audio, frequencies per ITU-T Q.23.

    For the in-band fallback when the far end does not take RFC 2833 telephone-events. Add the
    inter-digit pause with :func:`silence` (at least 40 ms is safe for receivers).
    """
    _check_ms(ms)
    try:
        low_hz, high_hz = DTMF_FREQUENCIES[digit.upper()]
    except KeyError:
        raise ValueError(f"not a DTMF digit: {digit!r}") from None
    low = _sine(low_hz, ms, DTMF_LOW_LEVEL_DBFS)
    high = _sine(high_hz, ms, DTMF_HIGH_LEVEL_DBFS)
    return to_pcm16_8k(_ramped(low.overlay(high)))


@functools.cache
def chime() -> bytes:
    """A short two-tone chime (880 Hz then 660 Hz): played when a voice prompt is missing."""
    first, second = (_ramped(_sine(hz, CHIME_TONE_MS, TONE_LEVEL_DBFS)) for hz in CHIME_HZ)
    return to_pcm16_8k(first + _silent(50) + second + _silent(200))
