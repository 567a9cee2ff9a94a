"""Installed as the package service.defaults (see pyproject.toml): the settings defaults and the section rules,
read through importlib.resources from a checkout, a wheel or a container image alike."""
