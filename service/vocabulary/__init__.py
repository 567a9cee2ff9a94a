"""Vocabulary biasing: the patient's own medications, allergies and problems, read from the chart the note is
written into, help the speech engine hear them, and the draft flags doses and drug names worth a second look.

The vocabulary is PHI. It lives only for the request: never logged, never cached, never in an error message;
the draft reports counts only.
"""
