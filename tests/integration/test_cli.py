import subprocess
import sys

from tests.conftest import REPO, SPEECH
from tests.support.wer import wer


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "service", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_transcribe_prints_the_transcript_and_reports_progress(dictation):
    result = run_cli("transcribe", str(dictation.path))
    assert result.returncode == 0, result.stderr
    assert wer(dictation.reference, result.stdout) < 0.2
    assert "39.9/39.9 s audio" in result.stderr  # the progress bar counts audio seconds


def test_transcribe_srt(dictation):
    result = run_cli("transcribe", str(dictation.path), "--format", "srt")
    assert result.returncode == 0 and result.stdout.startswith("1\n00:00:00,000 --> ")


def test_transcribe_bad_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "note.wav"
    bad.write_text("not audio")
    result = run_cli("transcribe", str(bad))
    assert result.returncode == 1
    assert "Unsupported audio: the data is not a recognised audio format" in result.stderr
    missing = run_cli("transcribe", str(tmp_path / "missing.wav"))
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_transcribe_with_another_model_and_language():
    result = run_cli("transcribe", str(SPEECH / "dictation_knee_pain.ogg"), "--model", "tiny.en", "--language", "fr")
    assert result.returncode == 1 and "English-only" in result.stderr


def test_sections_command(tmp_path):
    note = tmp_path / "note.txt"
    note.write_text("chief complaint cough period plan colon rest and fluids period")
    result = run_cli("sections", str(note))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "Chief complaint\ncough.\n\nPlan\nrest and fluids.\n"
    as_json = run_cli("sections", str(note), "--format", "json")
    assert '"code": "18776-5"' in as_json.stdout


def test_dictate_writes_to_the_fhir_server_and_prints_urls(fhir_server, dictation):
    from service.demo import DEMO_ENCOUNTER, DEMO_PATIENT, DEMO_PRACTITIONER

    args = ["dictate", str(dictation.path), "--patient", DEMO_PATIENT, "--encounter", DEMO_ENCOUNTER,
            "--author", f"Practitioner/{DEMO_PRACTITIONER}", "--fhir-base", fhir_server.base,
            "--idempotency-key", "cli-test-0001", "--note-type", "28570-0"]
    first, second = run_cli(*args), run_cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"created {fhir_server.base}/DocumentReference/")
    assert f"audit   {fhir_server.base}/AuditEvent/" in first.stdout
    assert "39.9/39.9 s audio" in first.stderr
    assert second.returncode == 0 and second.stdout.startswith("already there ")
    assert first.stdout.split()[1] == second.stdout.split()[2]


def test_dictate_against_an_unreachable_server_prints_the_draft(dictation):
    import json

    from tests.conftest import free_port

    result = run_cli("dictate", str(dictation.path), "--patient", "p1", "--author", "Practitioner/x",
                     "--fhir-base", f"http://127.0.0.1:{free_port()}/fhir")
    assert result.returncode == 1
    assert "FHIR server unavailable: cannot reach the FHIR server" in result.stderr
    draft = json.loads(result.stdout)
    assert draft["context"]["patient"] == "p1" and "chest pain" in draft["text"].lower()


def test_check_a_fhir_server(fhir_server):
    from service.demo import DEMO_PATIENT

    result = run_cli("check", "--fhir-base", fhir_server.base, "--patient", DEMO_PATIENT)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"ok   reachable: {fhir_server.base}") and "FHIR 4.0.1" in lines[0]
    for name in ("transactions", "conditional create", "search by identifier", "AuditEvent create", "credentials",
                 "MedicationRequest search by patient", "Condition search by patient", "Task create, update, search"):
        assert any(line.startswith(f"ok   {name}:") for line in lines), result.stdout


def test_check_an_unreachable_server():
    from tests.conftest import free_port

    result = run_cli("check", "--fhir-base", f"http://127.0.0.1:{free_port()}/fhir")
    assert result.returncode == 1 and result.stdout.startswith("FAIL reachable: cannot reach the FHIR server")
