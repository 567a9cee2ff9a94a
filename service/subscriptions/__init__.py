"""Subscription-triggered dictation: the EHR notifies, fhir-scribe fetches the recording, transcribes it and
writes the note, with each job tracked as a Task in the EHR so that restarts and replicas need no local state."""
