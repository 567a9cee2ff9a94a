"""The draft: everything needed to write a note, held by the client between review and commit.

Nothing is stored server-side: the draft travels to the caller (in a 200, or inside a 5xx problem when the EHR
write failed) and comes back to be committed. Its identifier is the idempotency key, so committing the same draft
twice, or retrying after a timeout, never creates a second note.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta, timezone
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from service.errors import BadRequest
from service.sections.note import StructuredNote
from service.review.flags import ReviewFlag
from service.vocabulary.models import VocabularyUse

# A FHIR id (R4: [A-Za-z0-9\-\.]{1,64}) that is not "." or "..": an id becomes a URL path segment.
FHIR_ID = r"(?=[A-Za-z0-9\-.]*[A-Za-z0-9\-])[A-Za-z0-9\-.]{1,64}"
_FHIR_ID = re.compile(rf"^{FHIR_ID}$")
_AUTHOR = re.compile(rf"^(Practitioner|PractitionerRole)/{FHIR_ID}$")
# Idempotency keys and the identifier values derived from them: no FHIR search syntax (, | $ \\) can get in.
IDENTIFIER_VALUE = r"^[A-Za-z0-9._:\-]{8,128}$"
_IDEMPOTENCY_KEY = re.compile(IDENTIFIER_VALUE)
_EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)


class DictationContext(BaseModel):
    """Who and what the note is about. From a validated token or trusted configuration, never guessed."""

    patient: str = Field(description="Patient id on the FHIR server")
    encounter: str | None = Field(None, description="Encounter id on the FHIR server")
    author: str = Field(description="Practitioner/<id> or PractitionerRole/<id>")
    note_type: str = Field(description="LOINC clinical-note type, e.g. 11506-3 (progress note)")

    @field_validator("patient", "encounter")
    @classmethod
    def _fhir_id(cls, value: str | None) -> str | None:
        if value is not None and not _FHIR_ID.match(value):
            raise ValueError("must be a FHIR id (1-64 of A-Z a-z 0-9 - .)")
        return value

    @field_validator("author")
    @classmethod
    def _author(cls, value: str) -> str:
        if not _AUTHOR.match(value):
            raise ValueError("must be Practitioner/<id> or PractitionerRole/<id>")
        return value


class AudioInfo(BaseModel):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    duration_s: float = Field(ge=0, le=86_400, allow_inf_nan=False)
    container: str = Field(pattern=r"^[A-Za-z0-9._,\-]{1,64}$")


class Identifier(BaseModel):
    system: str = Field(max_length=256)
    value: str = Field(pattern=IDENTIFIER_VALUE, description="8-128 of A-Z a-z 0-9 . _ : -")


class Draft(BaseModel):
    identifier: Identifier
    context: DictationContext
    doc_status: Literal["preliminary", "final"]
    text: str = Field(description="the note text; edit it during review, sections are rebuilt from it on commit")
    transcript: str = Field(description="what the speech engine heard, kept as it was for comparison")
    note: StructuredNote
    language: str = Field(pattern=r"^[a-z]{2,3}(-[A-Za-z0-9]{1,8}){0,3}$")
    audio: AudioInfo
    model: str = Field(pattern=r"^[\x20-\x7e]{1,200}$")
    model_revision: str = Field(pattern=r"^[\x20-\x7e]{1,200}$")
    dictated_at: datetime = Field(description="when the audio was received (end of dictation)")
    source: str | None = Field(None, description="the EHR resource the audio came from (Subscription jobs), e.g. "
                                                "DocumentReference/123: the note says it transforms it")
    vocabulary: VocabularyUse | None = Field(None, description="how the patient's chart biased the transcription")
    flags: list[ReviewFlag] = Field(default_factory=list, max_length=2000,
                                    description="doses and drug names to check during review (never auto-corrected)")
    resources: dict[str, dict] = Field(default_factory=dict,
                                       description="what would be written (output only; rebuilt on commit)")


    @field_validator("dictated_at")
    @classmethod
    def _plausible_time(cls, value: datetime) -> datetime:
        """A note's clinical time: with a time zone, not before 2000, not in the future (5 min of clock skew)."""
        if value.tzinfo is None:
            raise ValueError("must carry a time zone (e.g. 2026-11-30T10:00:00Z)")
        if not _EARLIEST <= value <= datetime.now(timezone.utc) + timedelta(minutes=5):
            raise ValueError("must lie between 2000-01-01 and now")
        return value


def dictation_identifier(system: str, idempotency_key: str | None, audio_sha256: str, context: DictationContext,
                         doc_status: str) -> Identifier:
    """The client's Idempotency-Key, else a digest of what makes a dictation the same dictation."""
    if idempotency_key is not None:
        if not _IDEMPOTENCY_KEY.match(idempotency_key):
            raise BadRequest("Idempotency-Key must be 8-128 characters of A-Z a-z 0-9 . _ : -")
        return Identifier(system=system, value=idempotency_key)
    # Note type and doc_status are part of it: the same recording filed as a consult note and as a progress note,
    # or posted as an unreviewed preliminary and later committed as the clinician's final, are different documents;
    # retries of any one of them stay one.
    basis = "|".join([audio_sha256, context.patient, context.encounter or "", context.note_type, doc_status])
    return Identifier(system=system, value=hashlib.sha256(basis.encode()).hexdigest()[:40])
