"""Transcription stage: decoded audio -> Transcript, with faster-whisper on local weights."""
