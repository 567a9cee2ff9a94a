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

    def context(self, patient: str | None, encounter: str | None, author: str | None, *,
                forwarded: bool) -> tuple[str, str | None, str]:
        """(patient, encounter, author) for a request, enforcing the token's launch context.

        ``forwarded``: the token goes to the FHIR server with every call (it is the token's audience), so the EHR
        itself decides what this user may read and write there. Without that, fhir-scribe acts with its own
        identity, which it only does for a patient the authorization server put in the token (launch context):
        a token naming no patient would otherwise let its holder reach any patient through fhir-scribe.
        """
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
        elif not forwarded:
            raise Forbidden("the token has no patient in its launch context and is not issued for the FHIR server "
                            "(aud), so the EHR cannot check this user's access to a patient: fhir-scribe will not act "
                            "on one for it")
        if not patient:
            raise Forbidden("no patient: neither the request nor the token names one")
        if not self.fhir_user:
            raise Forbidden("no author: the token names no user (fhirUser), and a note's author is taken only from "
                            "the token")
        if not self.fhir_user.startswith(("Practitioner/", "PractitionerRole/")):
            raise Forbidden(f"the token's user is a {self.fhir_user.split('/')[0]}, not a practitioner")
        if author and author != self.fhir_user:
            raise Forbidden("the request's author is not the token's user")
        return patient, encounter, self.fhir_user
