"""Installed as the package service.profiles (see pyproject.toml): the StructureDefinitions fhir-scribe
publishes, read through importlib.resources from a checkout, a wheel or a container image alike."""
