"""fhir-scribe: clinical dictation -> local transcription -> sectioned note -> FHIR DocumentReference."""

import os as _os

# Set before any stage imports its libraries, whatever the entry point (API, CLI, worker):
# - onnxruntime (faster-whisper's Silero VAD) otherwise keeps a telemetry database under ~/.cache/Microsoft,
#   written on every transcription, and tries to send it out. Forced: a hospital deployment must not opt in.
# - a model folder lacking a file must fail at once, not hang trying a model hub.
_os.environ["ORT_DISABLE_TELEMETRY"] = "1"
_os.environ.setdefault("HF_HUB_OFFLINE", "1")
