import pytest

from service.config import CONFIG_DIR
from service.sections.pipeline import Sectioner
from service.sections.rules import load_rules


@pytest.fixture(scope="session")
def rules():
    return load_rules(CONFIG_DIR / "sections.yaml")


@pytest.fixture(scope="session")
def sectioner(rules):
    return Sectioner(rules)
