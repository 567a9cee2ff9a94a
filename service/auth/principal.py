"""Who is calling, as a validated token says, and what that allows.

The token is the only source of patient, encounter and author when it carries them: a request can narrow what a
token allows, never widen it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from service.auth.errors import Forbidden
from service.auth.scopes import ResourceScope, allows, patient_scoped


@dataclass(frozen=True)
class Principal:
    issuer: str
    subject: str
    client_id: str | None
    scope: str
    scopes: list[ResourceScope] = field(repr=False)
    patient: str | None
    encounter: str | None
    fhir_user: str | None  # Practitioner/123: becomes the note's author
    audiences: list[str]
    token: str = field(repr=False)  # forwarded to the FHIR server when it is the token's audience

    def require(self, resource: str, permission: str) -> None:
        if not allows(self.scopes, resource, permission):
            raise Forbidden(f"the token's scopes do not allow {resource}.{permission}",
                            scope=f"user/{resource}.{permission}")

    def context(self, patient: str | None, encounter: str | None, author: str | None) -> tuple[str, str | None, str]:
        """(patient, encounter, author) for a request, enforcing the token's launch context."""
        if self.patient or patient_scoped(self.scopes):
            if not self.patient:
                raise Forbidden("a patient-scoped token without a patient in its launch context")
            if patient and patient != self.patient:
                raise Forbidden("the request's patient is not the token's patient")
            patient = self.patient
            if self.encounter:
                if encounter and encounter != self.encounter:
                    raise Forbidden("the request's encounter is not the token's encounter")
                encounter = self.encounter
        if not patient:
            raise Forbidden("no patient: neither the request nor the token names one")
        if self.fhir_user:
            if not self.fhir_user.startswith(("Practitioner/", "PractitionerRole/")):
                raise Forbidden(f"the token's user is a {self.fhir_user.split('/')[0]}, not a practitioner")
            if author and author != self.fhir_user:
                raise Forbidden("the request's author is not the token's user")
            author = self.fhir_user
        if not author:
            raise Forbidden("no author: the token has no fhirUser and the request names none")
        return patient, encounter, author
