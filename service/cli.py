"""``fhir-scribe serve`` and ``fhir-scribe transcribe FILE``.

The CLI reads the clinician's file itself and prints the transcript to stdout; nothing is written anywhere else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.config import ConfigError, Settings, load_settings
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

    args = parser.parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "sections":
            return _sections(args)
        return _transcribe(args)
    except ConfigError as exc:
        print(f"fhir-scribe: {exc}", file=sys.stderr)
        return 2
    except ScribeError as exc:
        print(f"fhir-scribe: {exc.title}: {exc.detail}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.app import create_app, load_transcriber
    from service.logs import configure_logging

    settings = load_settings()
    configure_logging(settings.logging.level)
    # Load the model before binding the port: a bad model setting stops here with its name, exit code 2.
    app = create_app(settings, transcriber=load_transcriber(settings))
    uvicorn.run(app, host=args.host or settings.server.host, port=args.port or settings.server.port,
                access_log=False, log_config=None)
    return 0


def _transcribe(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from service.api.app import load_transcriber
    from service.audio import decode
    from service.logs import configure_logging
    from service.transcription.render import render

    settings = load_settings()
    if args.model:
        settings = _with(settings, model=args.model)
    configure_logging("WARNING")
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        print(f"fhir-scribe: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    audio = decode(data, settings.audio)
    transcriber = load_transcriber(settings)
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
        text = args.file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        print(f"fhir-scribe: cannot read {args.file} as UTF-8 text: {exc}", file=sys.stderr)
        return 1
    note = Sectioner.from_file(settings.sections.rules_file).structure(text)
    if args.format == "json":
        sys.stdout.write(note.model_dump_json(indent=2) + "\n")
    elif args.format == "xhtml":
        sys.stdout.write(note.render_xhtml() + "\n")
    else:
        sys.stdout.write(note.render_text())
    return 0


def _with(settings: Settings, **transcription: object) -> Settings:
    return settings.model_copy(update={"transcription": settings.transcription.model_copy(update=transcription)})
