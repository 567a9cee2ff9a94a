"""The draft: everything needed to write a note, held by the client between review and commit.

Nothing is stored server-side: the draft travels to the caller (in a 200, or inside a 5xx problem when the EHR
write failed) and comes back to be committed. Its identifier is the idempotency key, so committing the same draft
twice, or retrying after a timeout, never creates a second note.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from service.errors import BadRequest
from service.sections.note import StructuredNote
from service.review import ReviewFlag
from service.vocabulary.models import VocabularyUse

_FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_AUTHOR = re.compile(r"^(Practitioner|PractitionerRole)/[A-Za-z0-9\-.]{1,64}$")
_IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:\-]{8,128}$")


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
    sha256: str
    duration_s: float
    container: str


class Identifier(BaseModel):
    system: str
    value: str


class Draft(BaseModel):
    identifier: Identifier
    context: DictationContext
    doc_status: Literal["preliminary", "final"]
    text: str = Field(description="the note text; edit it during review, sections are rebuilt from it on commit")
    transcript: str = Field(description="what the speech engine heard, kept as it was for comparison")
    note: StructuredNote
    language: str
    audio: AudioInfo
    model: str
    model_revision: str
    dictated_at: datetime = Field(description="when the audio was received (end of dictation)")
    source: str | None = Field(None, description="the EHR resource the audio came from (Subscription jobs), e.g. "
                                                "DocumentReference/123: the note says it transforms it")
    vocabulary: VocabularyUse | None = Field(None, description="how the patient's chart biased the transcription")
    flags: list[ReviewFlag] = Field(default_factory=list,
                                    description="doses and drug names to check during review (never auto-corrected)")
    resources: dict[str, dict] = Field(default_factory=dict,
                                       description="what would be written (output only; rebuilt on commit)")


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
