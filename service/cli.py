"""The ``fhir-scribe`` command: ``serve``, ``demo``, ``transcribe``, ``sections``, ``dictate``, ``check`` and
``profiles``. Thin: each command parses its arguments and calls the stage or use case that does the work.

Commands read the clinician's file themselves and print to stdout; a note goes only to the FHIR server
(``dictate``); nothing is written anywhere else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import ValidationError

from service.config import ConfigError, FhirSettings, Settings, load_settings
from service.errors import ScribeError
from service.transcription.render import MEDIA_TYPES


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fhir-scribe", description="Local clinical dictation to FHIR.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="bind address (default: server.host setting)")
    serve.add_argument("--port", type=int, help="port (default: server.port setting)")

    transcribe = commands.add_parser("transcribe", help="transcribe an audio file to stdout")
    transcribe.add_argument("file", type=Path)
    transcribe.add_argument("--format", choices=list(MEDIA_TYPES), default="text")
    transcribe.add_argument("--model", help="tiny.en, base or a CTranslate2 Whisper directory")
    transcribe.add_argument("--language", help="ISO 639-1 code (default: transcription.language setting)")

    sections = commands.add_parser("sections", help="structure a transcript text file into note sections")
    sections.add_argument("file", type=Path)
    sections.add_argument("--format", choices=["text", "json", "xhtml"], default="text")

    dictate = commands.add_parser("dictate", help="transcribe an audio file and write the note to a FHIR server")
    dictate.add_argument("file", type=Path)
    dictate.add_argument("--patient", required=True, help="Patient id on the FHIR server")
    dictate.add_argument("--encounter", help="Encounter id (must belong to the patient)")
    dictate.add_argument("--author", required=True, help="Practitioner/<id> or PractitionerRole/<id>")
    dictate.add_argument("--note-type", help="LOINC note type (default: fhir.default_note_type)")
    dictate.add_argument("--fhir-base", help="FHIR base URL (default: fhir.base_url setting)")
    dictate.add_argument("--token", help="bearer token for the FHIR server (default: fhir.bearer_token setting)")
    dictate.add_argument("--idempotency-key", help="8-128 characters; the same key never writes a second note")
    dictate.add_argument("--model", help="tiny.en, base or a CTranslate2 Whisper directory")

    check = commands.add_parser("check", help="can this FHIR server take fhir-scribe's notes? (before a first dictation)")
    check.add_argument("--fhir-base", help="FHIR base URL (default: fhir.base_url setting)")
    check.add_argument("--token", help="bearer token (default: fhir.bearer_token setting)")
    check.add_argument("--patient", help="a Patient id to read, proving the credentials work")

    profiles = commands.add_parser("profiles", help="list, write or upload the StructureDefinitions fhir-scribe "
                                                    "publishes (for fhir.profile_base)")
    profiles.add_argument("--out", type=Path, help="directory to write them to")
    profiles.add_argument("--upload", action="store_true",
                          help="PUT them to the FHIR server, so its $validate knows them (e.g. a HAPI sandbox)")
    profiles.add_argument("--fhir-base", help="FHIR base URL for --upload (default: fhir.base_url setting)")
    profiles.add_argument("--token", help="bearer token for --upload (default: fhir.bearer_token setting)")

    demo = commands.add_parser("demo", help="run a seeded local FHIR server and the service wired to it")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--fhir-port", type=int, default=8081)

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            from service.serving import run

            return run(args.host, args.port)
        if args.command == "sections":
            return _sections(args)
        if args.command == "dictate":
            return _dictate(args)
        if args.command == "check":
            return _check(args)
        if args.command == "profiles":
            return _profiles(args)
        if args.command == "demo":
            from service.demo import run

            return run(port=args.port, fhir_port=args.fhir_port)
        return _transcribe(args)
    except ConfigError as exc:
        print(f"fhir-scribe: {exc}", file=sys.stderr)
        return 2
    except ScribeError as exc:
        print(f"fhir-scribe: {exc.title}: {exc.detail}", file=sys.stderr)
        return 1
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        print(f"fhir-scribe: invalid argument: {problems}", file=sys.stderr)
        return 2


def _transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service.transcription.engine import load_transcriber
    from service.audio import decode
    from service.logs import configure_logging
    from service.transcription.render import render

    settings = _settings_with_model(args)
    configure_logging("WARNING")
    data = _read_input(args.file)
    audio = decode(data, settings.audio)
    transcriber = load_transcriber(settings.transcription)
    options = transcriber.default_options()
    if args.language:
        options = options.model_copy(update={"language": args.language})

    with tqdm(total=round(audio.duration_s, 1), unit="s", unit_scale=False, file=sys.stderr, desc="transcribing",
              bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio [{elapsed}<{remaining}]") as bar:
        def advance(segment) -> None:  # type: ignore[no-untyped-def]
            bar.update(round(min(segment.end, audio.duration_s) - bar.n, 1))

        transcript = transcriber.transcribe(audio, options, on_segment=advance)
        bar.update(bar.total - bar.n)
    sys.stdout.write(render(transcript, args.format, words=options.word_timestamps))
    if not args.format.endswith("text"):
        sys.stdout.write("\n")
    return 0


def _sections(args: argparse.Namespace) -> int:
    from service.sections.pipeline import Sectioner

    settings = load_settings()
    try:
        text = _read_input(args.file).decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{args.file} is not UTF-8 text") from None
    note = Sectioner.from_file(settings.sections.rules_file).structure(text)
    if args.format == "json":
        sys.stdout.write(note.model_dump_json(indent=2) + "\n")
    elif args.format == "xhtml":
        sys.stdout.write(note.render_xhtml() + "\n")
    else:
        sys.stdout.write(note.render_text())
    return 0


def _dictate(args: argparse.Namespace) -> int:
    import asyncio
    import json
    import uuid

    from tqdm import tqdm

    from service.transcription.engine import load_transcriber
    from service.dictation import DictationService
    from service.documents.draft import DictationContext
    from service.fhir.client import FhirClient
    from service.fhir.writer import NoteWriter
    from service.logs import configure_logging
    from service.sections.worker import SectionsWorker
    from service.transcription.pool import TranscriptionPool

    settings = _settings_with_model(args)
    settings = settings.model_copy(update={"fhir": _fhir_settings(settings.fhir, args)})
    configure_logging("WARNING")
    data = _read_input(args.file)
    ctx = DictationContext(patient=args.patient, encounter=args.encounter, author=args.author,
                           note_type=args.note_type or settings.fhir.default_note_type)
    request = uuid.uuid4().hex

    async def run() -> int:
        fhir = FhirClient(settings.fhir)
        sections = SectionsWorker(settings.sections)
        pool = TranscriptionPool(load_transcriber(settings.transcription))
        service = DictationService(settings, pool, sections, NoteWriter(fhir))
        bar = tqdm(total=1.0, unit="s", file=sys.stderr, desc="transcribing",
                   bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total:.1f} s audio")

        def progress(segment, total: float) -> None:  # type: ignore[no-untyped-def]
            bar.total = round(total, 1)
            bar.update(round(min(segment.end, total) - bar.n, 1))

        try:
            draft = await service.draft(data, ctx, doc_status="preliminary", idempotency_key=args.idempotency_key,
                                        request_id=request, on_segment=progress)
            bar.update(bar.total - bar.n)
            bar.close()
            result = await service.commit(draft, request_id=request, from_client=False)
        except ScribeError as failure:
            bar.close()
            print(f"fhir-scribe: {failure.title}: {failure.detail}", file=sys.stderr)
            if "draft" in failure.extras:  # nothing lost: the draft, to commit later (POST /v1/dictations/commit)
                print(json.dumps(failure.extras["draft"].model_dump(mode="json"), indent=2))
            return 1
        finally:
            pool.shutdown()
            sections.shutdown()
            await fhir.aclose()
        print(("created " if result.created else "already there ") + result.document_reference_url)
        print(f"audit   {result.fhir_base_url}/AuditEvent/{result.audit_event_id}" if result.audit_event_id else
              "audit   (written with the first attempt)")
        return 0

    return asyncio.run(run())


def _check(args: argparse.Namespace) -> int:
    import asyncio

    from service.fhir.capabilities import check_server
    from service.fhir.client import FhirClient
    from service.logs import configure_logging

    configure_logging("ERROR")  # the report is the output
    settings = _fhir_settings(load_settings().fhir, args)

    async def run() -> list:
        client = FhirClient(settings)
        try:
            return await check_server(client, patient=args.patient)
        finally:
            await client.aclose()

    checks = asyncio.run(run())
    for check in checks:
        mark = "ok  " if check.ok else ("FAIL" if check.required else "warn")
        print(f"{mark} {check.name}: {check.detail}")
    return 0 if all(c.ok or not c.required for c in checks) else 1


def _profiles(args: argparse.Namespace) -> int:
    import json

    from service.documents.profiles import load_profiles

    settings = load_settings()
    fhir = _fhir_settings(settings.fhir, args)
    failed = 0
    for profile in load_profiles(fhir.profile_base):
        where = ""
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            target = args.out / f"StructureDefinition-{profile['id']}.json"
            target.write_text(json.dumps(profile, indent=2) + "\n")
            where = f"  {target}"
        if args.upload:
            status = _upload(fhir, profile)
            failed += status not in (200, 201)
            where += f"  PUT {fhir.base_url.rstrip('/')}/StructureDefinition/{profile['id']}: {status}"
        print(f"{profile['url']}{where}")
    return 1 if failed else 0


def _upload(fhir: FhirSettings, profile: dict) -> int:
    """PUT one StructureDefinition (update-as-create: uploading again replaces it); the HTTP status."""
    import httpx

    headers = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
    if fhir.bearer_token:
        headers["Authorization"] = f"Bearer {fhir.bearer_token.get_secret_value()}"
    try:
        return httpx.put(f"{fhir.base_url.rstrip('/')}/StructureDefinition/{profile['id']}", json=profile,
                         headers=headers, timeout=fhir.timeout_s).status_code
    except httpx.HTTPError as exc:
        print(f"cannot reach {fhir.base_url}: {type(exc).__name__}", file=sys.stderr)
        return 0


class InputError(ScribeError):
    status, slug, title = 400, "input", "Cannot read the input"


def _read_input(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None


def _settings_with_model(args: argparse.Namespace) -> Settings:
    settings = load_settings()
    if args.model:
        settings = _with(settings, model=args.model)
    return settings


def _fhir_settings(fhir: FhirSettings, args: argparse.Namespace) -> FhirSettings:
    update = {k: v for k, v in (("base_url", args.fhir_base), ("bearer_token", args.token)) if v}
    return type(fhir).model_validate({**fhir.model_dump(), **update})


def _with(settings: Settings, **transcription: object) -> Settings:
    return settings.model_copy(update={"transcription": settings.transcription.model_copy(update=transcription)})
