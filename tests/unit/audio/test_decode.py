import numpy as np
import pytest

from service.audio import SAMPLE_RATE, AudioTooLarge, InvalidAudio, UnsupportedAudio, decode
from service.config import AudioLimits
from tests.conftest import FORMATS
from tests.support import bad_audio

LIMITS = AudioLimits(max_upload_bytes=8 * 1024 * 1024, max_duration_s=120, min_duration_s=0.5)
EXPECTED_CONTAINER = {"wav": "wav", "mp3": "mp3", "m4a": "mp4", "aac": "aac", "flac": "flac", "ogg": "ogg",
                      "opus.ogg": "ogg", "webm": "webm"}


@pytest.mark.parametrize("ext", FORMATS)
def test_every_accepted_format_decodes_to_16k_mono_float32(encoded, ext):
    audio = decode(encoded[ext], LIMITS)
    assert audio.container == EXPECTED_CONTAINER[ext]
    assert audio.samples.dtype == np.float32 and audio.samples.ndim == 1
    assert audio.duration_s == pytest.approx(39.9, abs=0.3)  # the fixture's length, whatever the codec
    assert 0.01 < float(np.sqrt(np.mean(audio.samples ** 2))) < 0.5  # speech level survived resampling


def test_format_comes_from_the_bytes_not_a_name(encoded):
    # decode() gets no name or MIME type at all; two different containers are told apart by content alone.
    assert decode(encoded["flac"], LIMITS).container == "flac"
    assert decode(encoded["webm"], LIMITS).codec == "opus"


def test_digest_identifies_the_upload(encoded):
    a, b = decode(encoded["wav"], LIMITS), decode(encoded["wav"], LIMITS)
    assert a.sha256 == b.sha256 and len(a.sha256) == 64
    assert decode(encoded["flac"], LIMITS).sha256 != a.sha256


EXPECTED = {
    "zero_bytes": (InvalidAudio, "empty (0 bytes)"),
    "random_bytes": (UnsupportedAudio, "not a recognised audio format"),
    "text_renamed_wav": (UnsupportedAudio, "not a recognised audio format"),
    "json_document": (UnsupportedAudio, "not a recognised audio format"),
    "pdf_document": (UnsupportedAudio, "not a recognised audio format"),
    "png_image": (UnsupportedAudio, "'png_pipe' data is not a supported audio format"),
    "video_only_mp4": (UnsupportedAudio, "contains no audio stream"),
    "unsupported_codec_wav": (UnsupportedAudio, "codec 'adpcm_ms' is not supported"),
    "truncated_mp3": (InvalidAudio, "mp3 file is truncated: its header declares 39.9 s"),
    "truncated_webm": (InvalidAudio, "webm file is truncated"),
    "truncated_m4a": (InvalidAudio, "looks like mp4 but cannot be opened: corrupt or truncated"),
    "truncated_wav": (InvalidAudio, "wav file is truncated: its header declares 39.9 s"),
    "truncated_flac": (InvalidAudio, "flac audio is corrupt or truncated"),
    "header_claims_hours_wav": (InvalidAudio, "header declares 180.0 min; the limit is 2.0 min"),
    "too_long_by_header": (InvalidAudio, "header declares 2.5 min; the limit is 2.0 min"),
    "too_long_while_decoding": (InvalidAudio, "runs past the 2.0 min limit while decoding"),
    "clip_0_1_s": (InvalidAudio, "lasts 0.10 s; the minimum is 0.5 s"),
    "twice_the_size_limit": (AudioTooLarge, "16.0 MiB; the limit is 8.0 MiB"),
}


@pytest.fixture(scope="module")
def bad(tmp_path_factory, dictation, encoded):
    return bad_audio.make(tmp_path_factory.mktemp("bad"), dictation.path, encoded)


def test_every_generated_bad_input_has_an_expectation(bad):
    assert set(bad) == set(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_bad_input_gets_a_precise_error(bad, name):
    error, fragment = EXPECTED[name]
    with pytest.raises(error) as caught:
        decode(bad[name], LIMITS)
    assert fragment in caught.value.detail


def test_silence_decodes_as_audio(dictations):
    from tests.conftest import SPEECH

    audio = decode((SPEECH / "silence.ogg").read_bytes(), LIMITS)
    assert audio.duration_s == pytest.approx(5.0, abs=0.1)
    assert len(audio.samples) == pytest.approx(5 * SAMPLE_RATE, abs=SAMPLE_RATE // 10)
