"""The dictation use case: audio + context -> draft -> note in the EHR. Strings the stages together in one
direction (audio -> transcription -> sections -> documents -> fhir) and owns the "nothing lost" rule: whenever
the EHR write fails, the error carries the whole draft so the caller can commit it later.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Collection
from datetime import datetime, timezone

from service.audio import decode
from service.config import Settings
from service.documents.draft import AudioInfo, DictationContext, Draft, dictation_identifier
from service.documents.resources import write_plan
from service.errors import BadRequest, ScribeError, Unprocessable
from service.fhir.writer import NoteWriter, WriteResult
from service.review import review
from service.sections.worker import SectionsWorker
from service.transcription.coverage import unheard
from service.transcription.pool import TranscriptionPool
from service.transcription.transcript import Segment, TranscribeOptions
from service.vocabulary.bias import biased, fitted
from service.fhir.chart_reader import ChartReader
from service.vocabulary.models import VocabularyUse


class DictationService:
    def __init__(self, settings: Settings, pool: TranscriptionPool, sections: SectionsWorker,
                 writer: NoteWriter) -> None:
        self.settings = settings
        self.pool = pool
        self.sections = sections
        self.writer = writer
        self.chart = ChartReader(writer.client, settings.vocabulary)

    def check_note_type(self, note_type: str) -> None:
        if note_type not in self.settings.fhir.note_types:
            known = ", ".join(f"{code} ({name})" for code, name in self.settings.fhir.note_types.items())
            raise BadRequest(f"the note type is not one of {known}")  # the caller's text is not echoed

    async def live_options(self, patient: str | None, chart_readable: Collection[str] | None) -> TranscribeOptions:
        """A live stream's decoding options: the engine's defaults, biased with the patient's chart vocabulary
        (looked up once, when the stream opens, within what the caller may read)."""
        options = self.pool.transcriber.default_options()
        if not patient:
            return options
        chart = await self.chart.vocabulary(patient, chart_readable)
        return biased(options, *fitted(chart.terms, self.settings.vocabulary))

    async def draft(self, audio_bytes: bytes, ctx: DictationContext, *, doc_status: str,
                    idempotency_key: str | None, request_id: str, chart_readable: Collection[str] | None = None,
                    source: str | None = None, on_segment: Callable[[Segment, float], None] | None = None,
                    ended_at: Callable[[float], datetime | None] | None = None) -> Draft:
        """Transcribe and structure. A wrong patient or encounter stops here, before any transcription; an
        unreachable EHR does not: the caller still gets the draft, with the error, to commit later.
        The patient's chart vocabulary is read meanwhile (``chart_readable``: the resource types the caller may
        search; None = no token). ``on_segment(segment, audio_duration_s)`` is called on the worker thread as
        each segment is decoded. ``ended_at(audio_duration_s)``: when the recording ended, if its source says
        (a Subscription job's recording); otherwise the dictation ends now, as it arrives."""
        self.check_note_type(ctx.note_type)
        lookup = asyncio.create_task(self.chart.vocabulary(ctx.patient, chart_readable))
        deferred: ScribeError | None = None
        try:
            try:
                await self.writer.check_context(ctx)
            except Unprocessable:
                raise
            except ScribeError as unreachable:
                deferred = unreachable
            audio = await asyncio.to_thread(decode, audio_bytes, self.settings.audio)
        except BaseException:
            lookup.cancel()
            raise
        chart = await lookup
        engine, terms = fitted(chart.terms, self.settings.vocabulary)
        options = biased(self.pool.transcriber.default_options(), engine, terms)
        dictated_at = (ended_at(audio.duration_s) if ended_at else None) or datetime.now(timezone.utc)
        def segment_decoded(segment: Segment) -> None:  # on the worker thread
            if on_segment is not None:
                on_segment(segment, audio.duration_s)

        transcript = await self.pool.transcribe(audio, options, on_segment=segment_decoded)
        note = await self.sections.structure(transcript.text)
        unheard_speech = await asyncio.to_thread(unheard, audio.samples, transcript) if options.word_timestamps else []
        # Text-sized work (alignment, chart checks) off the event loop: an hour's dictation is ~50,000 characters.
        flags = await asyncio.to_thread(review, transcript, note, unheard_speech, chart.terms,
                                        self.settings.review)
        vocabulary = VocabularyUse(status=chart.status, terms=len(terms), engine=engine, lookup_ms=chart.lookup_ms,
                                   by_source=dict(Counter(t.source for t in terms)), reason=chart.reason)
        draft = Draft(
            identifier=dictation_identifier(self.settings.fhir.identifier_system, idempotency_key, audio.sha256, ctx,
                                            doc_status),
            context=ctx, doc_status=doc_status, text=note.text, transcript=transcript.text, note=note,
            language=transcript.language,
            audio=AudioInfo(sha256=audio.sha256, duration_s=round(audio.duration_s, 3), container=audio.container),
            model=transcript.model, model_revision=transcript.model_revision, dictated_at=dictated_at,
            vocabulary=vocabulary, source=source,
            flags=flags,
        )
        plan = write_plan(draft, self.settings.fhir, request_id)
        draft.resources = {"DocumentReference": plan.document_reference, "AuditEvent": plan.audit_event}
        if deferred is not None:
            deferred.extras["draft"] = draft
            raise deferred
        return draft

    async def commit(self, draft: Draft, *, request_id: str, from_client: bool = True) -> WriteResult:
        """Write a draft. A draft coming back from a client has its sections rebuilt from its (possibly edited)
        text and its context checked again; resources are never taken from the client."""
        if draft.identifier.system != self.settings.fhir.identifier_system:
            raise BadRequest(f"the draft's identifier system is not {self.settings.fhir.identifier_system}")
        self.check_note_type(draft.context.note_type)
        if from_client and draft.source is not None:
            # Only a Subscription job names the recording a note transforms, after reading it from the EHR; a
            # client-named source would let a note point at any patient's document.
            raise Unprocessable("'source' is set by fhir-scribe's Subscription jobs only; leave it out of a commit")
        if from_client:
            draft = draft.model_copy(update={"note": await self.sections.structure(draft.text), "resources": {}})
        try:
            if from_client:
                await self.writer.check_context(draft.context)
            plan = write_plan(draft, self.settings.fhir, request_id)
            return await self.writer.write(plan, draft.identifier, request_id)
        except ScribeError as failure:
            failure.extras["draft"] = draft  # nothing lost: the caller can fix and commit this later
            raise
