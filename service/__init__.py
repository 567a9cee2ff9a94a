"""fhir-scribe: clinical dictation -> local transcription -> sectioned note -> FHIR DocumentReference."""
