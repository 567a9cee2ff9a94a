"""``POST /v1/sections``: transcript text in, structured note out. Thin: validate, structure off the loop."""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from service.api.bodies import json_body, read_json
from service.api.security import authenticated
from service.api.deps import get_sections, get_settings
from service.config import Settings
from service.logs import event
from service.sections.note import StructuredNote
from service.sections.worker import SectionsWorker

router = APIRouter(tags=["sections"], dependencies=[Depends(authenticated)])
log = logging.getLogger(__name__)


class SectionsRequest(BaseModel):
    text: str = Field(description="a transcript, e.g. the text of /v1/audio/transcriptions")


class SectionsResponse(StructuredNote):
    rendered_text: str = Field(description="plain-text note with headings")
    rendered_xhtml: str = Field(description="escaped XHTML, usable as a FHIR narrative")


@router.post("/v1/sections", response_model=SectionsResponse, openapi_extra=json_body(SectionsRequest),
             summary="Structure a transcript into LOINC-coded sections")
async def create_sections(request: Request, settings: Settings = Depends(get_settings),
                          sections: SectionsWorker = Depends(get_sections)) -> SectionsResponse:
    body = await read_json(request, SectionsRequest, settings.server.max_json_bytes)  # authenticated first
    started = time.perf_counter()
    note = await sections.structure(body.text)
    event(log, "sections.done", chars=len(body.text), sections=len(note.sections), findings=len(note.findings),
          commands=len(note.dictation_commands), ms=round((time.perf_counter() - started) * 1000, 1))
    return SectionsResponse(**note.model_dump(), rendered_text=note.render_text(), rendered_xhtml=note.render_xhtml())
