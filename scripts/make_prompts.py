#!/usr/bin/env python3
"""Make the caller-facing voice prompts: 8 kHz mono 16-bit WAV, one file per prompt.

The wording lives in ``callcenter/prompts.py`` (one place). The generated files are committed
under ``callcenter/prompt_audio/<language>/<name>.wav``, so neither CI nor a site needs
espeak-ng; only this script does.

Regenerate after changing the wording (needs ``espeak-ng``: ``apt-get install espeak-ng``)::

    .venv/bin/python scripts/make_prompts.py generate            # zh and en
    .venv/bin/python scripts/make_prompts.py generate --language zh

Mandarin uses the espeak-ng voice ``cmn-latn-pinyin``. The plain ``cmn`` voice of espeak-ng 1.51
(Debian 12) reads the tone numbers of its own pinyin in English ("nin two hao three"); the
pinyin variant reads the same Chinese text correctly.

A site that records its own voice (a real announcer, or Teochew 潮州话 for its elders):

1. ``.venv/bin/python scripts/make_prompts.py list --language zh`` prints each file name with
   the text to read (``--language en`` for English).
2. Record each text as a WAV file (any rate, 16-bit PCM, mono or stereo), in a quiet room,
   about 30 cm from the microphone, with half a second of silence before and after.
3. Convert each one::

       .venv/bin/python scripts/make_prompts.py convert take1.wav \\
           /srv/hyt-prompts/teochew/help_coming.wav

   This trims silence, band-limits to the telephone band before going down to 8 kHz (pydub's
   plain rate conversion would fold the hiss of "s", "x", "q" into the speech), normalises the
   level, and pads to whole 20 ms frames.
4. Point the centre at the folder with ``HYT_PROMPT_DIR=/srv/hyt-prompts`` and call with
   ``language="teochew"``. A prompt missing in that language falls back to ``zh`` there, then
   to a chime. That folder replaces the packaged one, so copy ``zh/`` (and ``en/``) into it.

The centre also reads unconverted PCM WAVs at run time, with a plainer rate conversion.
"""

from __future__ import annotations

import argparse
import math
import operator
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from callcenter.prompts import DEFAULT_PROMPT_DIR, FRAME_BYTES, Prompt, text
from devices.tones import SAMPLE_RATE, SAMPLE_WIDTH, AudioSegment

ESPEAK_VOICES = {"zh": "cmn-latn-pinyin", "en": "en"}
ESPEAK_SPEED_WPM = 150  # unhurried: the listeners are elderly
PEAK_DBFS = -3.0
EDGE_SILENCE_MS = 50  # kept before and after the speech
SILENCE_THRESHOLD_DBFS = -50.0
# Low-pass before going down to 8 kHz: flat to ~3.4 kHz (the telephone band), stopped from
# ~4.2 kHz, so that nothing folds back below 3.8 kHz.
CUTOFF_HZ = 3800.0
TRANSITION_HZ = 800.0


def lowpass_taps(rate: int) -> list[float]:
    """A Hamming-windowed sinc low-pass (about -53 dB stop band), unity gain at DC."""
    count = int(3.3 * rate / TRANSITION_HZ) | 1  # odd: symmetric around one centre tap
    centre = count // 2
    fc = CUTOFF_HZ / rate
    taps = []
    for n in range(count):
        k = n - centre
        ideal = 2 * fc if k == 0 else math.sin(2 * math.pi * fc * k) / (math.pi * k)
        taps.append(ideal * (0.54 - 0.46 * math.cos(2 * math.pi * n / (count - 1))))
    total = sum(taps)
    return [t / total for t in taps]


def band_limit(segment: AudioSegment) -> AudioSegment:
    """Mono 16-bit ``segment`` low-passed for 8 kHz (pure Python; a few seconds per file)."""
    if segment.frame_rate <= SAMPLE_RATE:
        return segment
    taps = lowpass_taps(segment.frame_rate)
    half = len(taps) // 2
    samples = [0] * half + list(segment.get_array_of_samples()) + [0] * half
    out = segment.get_array_of_samples()
    for i in range(len(out)):
        value = sum(map(operator.mul, taps, samples[i : i + len(taps)]))
        out[i] = max(-32768, min(32767, round(value)))
    return segment._spawn(data=out.tobytes())


def trim(segment: AudioSegment) -> AudioSegment:
    from pydub.silence import detect_leading_silence

    start = detect_leading_silence(segment, silence_threshold=SILENCE_THRESHOLD_DBFS)
    end = detect_leading_silence(segment.reverse(), silence_threshold=SILENCE_THRESHOLD_DBFS)
    start = max(0, start - EDGE_SILENCE_MS)
    end = max(0, end - EDGE_SILENCE_MS)
    return segment[start : len(segment) - end]


def to_telephone(segment: AudioSegment) -> AudioSegment:
    """Trimmed, band-limited, 8 kHz mono 16-bit, peak at -3 dBFS, whole 20 ms frames."""
    segment = segment.set_channels(1).set_sample_width(SAMPLE_WIDTH)
    segment = band_limit(trim(segment)).set_frame_rate(SAMPLE_RATE)
    if segment.max_dBFS > -math.inf:
        segment = segment.apply_gain(PEAK_DBFS - segment.max_dBFS)
    pad = -len(segment.raw_data) % FRAME_BYTES
    return segment._spawn(data=segment.raw_data + bytes(pad))


def read_wav(path: Path) -> AudioSegment:
    return AudioSegment(data=path.read_bytes())  # PCM WAV only; no ffmpeg needed


def write_wav(segment: AudioSegment, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    segment.export(str(path), format="wav")


def speak(words: str, voice: str, espeak: str) -> AudioSegment:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        command = [espeak, "-v", voice, "-s", str(ESPEAK_SPEED_WPM), "-w", str(wav), words]
        subprocess.run(command, check=True)
        return read_wav(wav)


def generate(languages: list[str], out_dir: Path) -> int:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        print("espeak-ng not found: apt-get install espeak-ng", file=sys.stderr)
        return 1
    for language in languages:
        for prompt in Prompt:
            path = out_dir / language / prompt.file_name
            audio = to_telephone(speak(text(prompt, language), ESPEAK_VOICES[language], espeak))
            write_wav(audio, path)
            print(f"{path}  {len(audio) / 1000:.1f} s  {path.stat().st_size // 1024} KiB")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    gen = commands.add_parser("generate", help="synthesise the prompts with espeak-ng")
    gen.add_argument("--language", choices=sorted(ESPEAK_VOICES), action="append")
    gen.add_argument("--out", type=Path, default=DEFAULT_PROMPT_DIR)
    listing = commands.add_parser("list", help="file names and the text to record")
    listing.add_argument("--language", default="zh")
    conv = commands.add_parser("convert", help="a site recording to 8 kHz mono 16-bit")
    conv.add_argument("source", type=Path)
    conv.add_argument("target", type=Path)
    args = parser.parse_args(argv)

    if args.command == "generate":
        return generate(args.language or sorted(ESPEAK_VOICES, reverse=True), args.out)
    if args.command == "list":
        for prompt in Prompt:
            print(f"{args.language}/{prompt.file_name}\t{text(prompt, args.language)}")
        return 0
    write_wav(to_telephone(read_wav(args.source)), args.target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
