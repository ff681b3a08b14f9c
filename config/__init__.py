"""The config base every config model builds on, the drivers' included: ``base.py`` (Section, ConfigError, secrets
from files). It imports pydantic and nothing of MQTT or the running process; reading a file plus the environment
into a model is ``runtime/settings.py``, which drivers never import."""
