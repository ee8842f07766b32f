"""Waveforms in and out of WAV files: the one format every speech input takes on its way to a model.

Everything here is float32 mono at ``SAMPLE_RATE`` (16 kHz, what SeamlessM4T's feature extractor
and the speech LLMs' processors expect): ``load_waveform`` brings any PCM or float WAV to that
form, ``resample`` converts a signal's rate, ``to_float_mono`` its sample format and channels, and
``wav_bytes`` encodes a waveform as the float32 WAV the speech cache stores.
"""
from __future__ import annotations

import io
import os
import warnings
from math import gcd
from pathlib import Path

import numpy as np
from scipy.io import wavfile

from engine.errors import UserError

SAMPLE_RATE = 16_000


def resample(waveform: np.ndarray, orig_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """``waveform`` (1-D, sampled at ``orig_rate`` Hz) at ``target_rate`` Hz, float32.

    Polyphase resampling by the reduced ratio ``target_rate / orig_rate``; the output has
    ``ceil(n * target_rate / orig_rate)`` samples. Unchanged (only cast to float32) when the rates agree.
    """
    waveform = np.asarray(waveform, dtype=np.float32)
    if orig_rate == target_rate:
        return waveform
    # imported here: scipy.signal takes ~0.5 s to import, which every importer of the pipeline's
    # run module (``engine run --help`` included) would pay, and only resampling needs it
    from scipy.signal import resample_poly

    g = gcd(int(orig_rate), int(target_rate))
    return resample_poly(waveform, target_rate // g, orig_rate // g).astype(np.float32)


def to_float_mono(data: np.ndarray) -> np.ndarray:
    """Samples as WAV readers return them, ``[n]`` or ``[n, channels]``, as float32 mono ``[n]``.

    Unsigned 8-bit PCM is centred on 128 and scaled by 1/128; signed integer PCM is scaled by
    1 / 2**(bits - 1), so both land in [-1, 1). Float data is kept as it is. Channels are averaged.
    """
    if data.dtype == np.uint8:
        data = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        data = data.astype(np.float32) / float(np.iinfo(data.dtype).max + 1)
    data = np.asarray(data, dtype=np.float32)
    if data.ndim == 2:
        data = data.mean(axis=1)
    return data


def load_waveform(path: str | os.PathLike) -> np.ndarray:
    """Read a WAV file as float32 mono at 16 kHz, shape [n_samples].

    Integer PCM is scaled to [-1, 1), channels are averaged, other rates are resampled.
    Raises UserError naming the file when it is missing, unreadable, truncated or empty.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            # scipy only warns when the data ends before its header says: the file is truncated
            warnings.filterwarnings("error", message="(Reached EOF prematurely|Incomplete chunk)",
                                    category=wavfile.WavFileWarning)
            rate, data = wavfile.read(path)
    except wavfile.WavFileWarning as exc:
        raise UserError(f"audio file {path} is truncated ({exc}): replace it with a whole copy "
                        f"(a cached synthesis: delete it and rerun)") from None
    except FileNotFoundError:
        raise UserError(f"audio file {path} does not exist: rerun synthesis to recreate it") from None
    except Exception as exc:  # scipy raises ValueError and friends for malformed files
        raise UserError(f"audio file {path} is unreadable ({exc}): delete it and rerun synthesis, "
                        f"or replace it with a valid WAV file") from None
    waveform = resample(to_float_mono(data), rate)
    if waveform.size == 0:
        raise UserError(f"audio file {path} holds no samples: delete it and rerun synthesis")
    return waveform


def wav_bytes(waveform: np.ndarray) -> bytes:
    """The whole WAV file of ``waveform`` (1-D, taken to be at ``SAMPLE_RATE``): IEEE float32, mono.

    Encoded in memory so the caller can digest the bytes and write them in one atomic step; the
    same samples always give the same bytes (scipy's ``wavfile.write``, no timestamps).
    """
    buffer = io.BytesIO()
    wavfile.write(buffer, SAMPLE_RATE, np.asarray(waveform, dtype=np.float32))
    return buffer.getvalue()
