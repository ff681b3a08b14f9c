"""Pin configuration loading: TOML file + HALLFLEET_* environment, secrets from files, and errors that
name the file and the dotted field, both from load_settings() and from the CLI (exit code 2).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from agent.config import AgentConfig
from broker.config import ConsumerConfig
from config.base import ConfigError
from runtime.settings import MqttConfig, TlsConfig, load_settings

REPO = Path(__file__).resolve().parents[1]

AGENT_TOML = """\
site = "qingpu"
device = "att-01"
role = "sim"
heartbeat_s = 10.0

[mqtt]
host = "broker.hall.local"
port = 8883

[outbox]
path = "/var/lib/hallfleet/att-01.db"
max_telemetry = 500
"""


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The developer's or CI's own HALLFLEET_* variables must not leak into what is being tested."""
    for name in list(os.environ):
        if name.startswith("HALLFLEET_") or name == "CREDENTIALS_DIRECTORY":
            monkeypatch.delenv(name)
    yield


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def config_error(cls: type[AgentConfig] | type[ConsumerConfig], path: Path) -> str:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(cls, path)
    return str(excinfo.value)


def names_field(message: str, field: str, msg: str) -> bool:
    """The error lists ``  {dotted.field}: {pydantic message}`` on a line of its own."""
    return re.search(rf"^  {re.escape(field)}: {re.escape(msg)}", message, re.MULTILINE) is not None


# --------------------------------------------------------------------------------------------------
# load_settings(AgentConfig)
# --------------------------------------------------------------------------------------------------


def test_agent_config_is_read_from_toml(tmp_path: Path) -> None:
    cfg = load_settings(AgentConfig, write(tmp_path, AGENT_TOML))

    assert cfg.site == "qingpu"
    assert cfg.device == "att-01"
    assert cfg.role == "sim"
    assert cfg.heartbeat_s == 10.0
    assert cfg.mqtt.host == "broker.hall.local"
    assert cfg.mqtt.port == 8883
    assert cfg.outbox.path == Path("/var/lib/hallfleet/att-01.db")
    assert cfg.outbox.max_telemetry == 500
    assert cfg.client_id == "qingpu.att-01"


def test_agent_config_defaults_what_the_file_leaves_out(tmp_path: Path) -> None:
    cfg = load_settings(AgentConfig, write(tmp_path, 'site = "qingpu"\ndevice = "att-01"\n'))

    assert cfg.role == "none"
    assert cfg.mqtt.host == "127.0.0.1"
    assert cfg.mqtt.port == 1883
    assert cfg.mqtt.tls is None
    assert cfg.outbox.max_critical == 200_000


def test_environment_overrides_the_file_field_by_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALLFLEET_MQTT__PORT", "1999")

    cfg = load_settings(AgentConfig, write(tmp_path, AGENT_TOML))

    assert cfg.mqtt.port == 1999
    assert cfg.mqtt.host == "broker.hall.local"  # the rest of [mqtt] still comes from the file


def test_environment_overrides_a_top_level_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALLFLEET_DEVICE", "att-02")

    cfg = load_settings(AgentConfig, write(tmp_path, AGENT_TOML))

    assert cfg.device == "att-02"
    assert cfg.site == "qingpu"


def test_agent_config_is_frozen(tmp_path: Path) -> None:
    cfg = load_settings(AgentConfig, write(tmp_path, AGENT_TOML))

    with pytest.raises(ValidationError):
        cfg.site = "songjiang"  # type: ignore[misc]
    with pytest.raises(ValidationError):
        cfg.mqtt.port = 1  # type: ignore[misc]


def test_invalid_value_names_the_file_and_the_dotted_field(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_TOML.replace("port = 8883", "port = 70000"))

    message = config_error(AgentConfig, path)

    assert message.startswith(f"invalid config ({path}):")
    assert names_field(message, "mqtt.port", "Input should be less than or equal to 65535")


def test_invalid_value_from_the_environment_names_the_field(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALLFLEET_MQTT__PORT", "eighty")

    message = config_error(AgentConfig, write(tmp_path, AGENT_TOML))

    assert names_field(message, "mqtt.port", "Input should be a valid integer")


def test_bad_segment_in_site_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "qing/pu"\ndevice = "att-01"\n')

    assert names_field(config_error(AgentConfig, path), "site", "String should match pattern")


def test_every_invalid_field_is_listed(tmp_path: Path) -> None:
    text = AGENT_TOML.replace("port = 8883", "port = 0").replace("heartbeat_s = 10.0", "heartbeat_s = 0")

    message = config_error(AgentConfig, write(tmp_path, text))

    assert names_field(message, "mqtt.port", "Input should be greater than or equal to 1")
    assert names_field(message, "heartbeat_s", "Input should be greater than or equal to 0.2")


def test_unknown_top_level_key_is_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_TOML.replace('role = "sim"', 'role = "sim"\ncolour = "red"'))

    assert names_field(config_error(AgentConfig, path), "colour", "Extra inputs are not permitted")


def test_unknown_nested_key_is_refused_by_dotted_name(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_TOML.replace("port = 8883", "port = 8883\nhots = 'typo'"))

    assert names_field(config_error(AgentConfig, path), "mqtt.hots", "Extra inputs are not permitted")


def test_missing_required_site_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, AGENT_TOML.replace('site = "qingpu"\n', ""))

    message = config_error(AgentConfig, path)

    assert names_field(message, "site", "Field required")
    assert not names_field(message, "device", "Field required")


def test_toml_syntax_error_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, 'site = "qingpu\ndevice = "att-01"\n')

    message = config_error(AgentConfig, path)

    assert message.startswith(f"cannot read config {path}: ")


def test_missing_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.toml"

    assert config_error(AgentConfig, path) == f"config file {path} does not exist"


def test_directory_instead_of_file_is_a_config_error(tmp_path: Path) -> None:
    assert config_error(AgentConfig, tmp_path) == f"config file {tmp_path} does not exist"


def test_without_a_file_the_environment_alone_configures(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALLFLEET_SITE", "qingpu")
    monkeypatch.setenv("HALLFLEET_DEVICE", "kiosk-3")

    cfg = load_settings(AgentConfig, None)

    assert (cfg.site, cfg.device) == ("qingpu", "kiosk-3")


def test_without_a_file_a_missing_field_names_the_environment() -> None:
    with pytest.raises(ConfigError) as excinfo:
        load_settings(AgentConfig, None)

    message = str(excinfo.value)
    assert message.startswith("invalid config (environment):")
    assert names_field(message, "site", "Field required")


# --------------------------------------------------------------------------------------------------
# Secrets and TLS
# --------------------------------------------------------------------------------------------------


def test_password_is_read_from_password_file(tmp_path: Path) -> None:
    secret = write(tmp_path, "s3cret-pass\n", name="mqtt.pw")

    assert MqttConfig(password_file=secret).password() == "s3cret-pass"


def test_password_falls_back_to_systemd_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "from-systemd\n", name="mqtt-password")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))

    assert MqttConfig().password() == "from-systemd"


def test_password_file_wins_over_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "creds").mkdir()
    write(tmp_path / "creds", "from-systemd", name="mqtt-password")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path / "creds"))

    assert MqttConfig(password_file=write(tmp_path, "from-file", name="pw")).password() == "from-file"


def test_no_password_anywhere_is_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert MqttConfig().password() is None
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))  # exists, but holds no mqtt-password
    assert MqttConfig().password() is None


def test_unreadable_password_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pw"

    with pytest.raises(ConfigError, match=re.escape(f"cannot read secret {missing}")):
        MqttConfig(password_file=missing).password()


def test_password_file_comes_from_toml(tmp_path: Path) -> None:
    secret = write(tmp_path, "pw-from-toml\n", name="mqtt.pw")
    text = AGENT_TOML.replace("port = 8883", f'port = 8883\npassword_file = "{secret}"')

    cfg = load_settings(AgentConfig, write(tmp_path, text))

    assert cfg.mqtt.password() == "pw-from-toml"


def test_tls_cert_without_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        TlsConfig(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "dev.pem")


def test_tls_key_without_cert_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cert_file and key_file go together"):
        TlsConfig(ca_file=tmp_path / "ca.pem", key_file=tmp_path / "dev.key")


def test_tls_with_cert_and_key_or_neither_is_accepted(tmp_path: Path) -> None:
    pair = TlsConfig(ca_file=tmp_path / "ca.pem", cert_file=tmp_path / "d.pem", key_file=tmp_path / "d.key")
    ca_only = TlsConfig(ca_file=tmp_path / "ca.pem")

    assert (pair.cert_file, pair.key_file) == (tmp_path / "d.pem", tmp_path / "d.key")
    assert (ca_only.cert_file, ca_only.key_file) == (None, None)


def test_tls_cert_without_key_in_toml_names_mqtt_tls(tmp_path: Path) -> None:
    text = AGENT_TOML + '\n[mqtt.tls]\nca_file = "/etc/hallfleet/ca.pem"\ncert_file = "/etc/hallfleet/d.pem"\n'

    message = config_error(AgentConfig, write(tmp_path, text))

    assert names_field(message, "mqtt.tls", "Value error, cert_file and key_file go together")


# --------------------------------------------------------------------------------------------------
# load_settings(ConsumerConfig)
# --------------------------------------------------------------------------------------------------

CONSUMER_TOML = """\
instance = "central-1"

[store]
url = "postgresql+asyncpg://hallfleet@db/hallfleet"

[ingest]
batch_size = 1000
share_group = "ingest"
"""


def test_consumer_config_is_read_from_toml(tmp_path: Path) -> None:
    cfg = load_settings(ConsumerConfig, write(tmp_path, CONSUMER_TOML))

    assert cfg.instance == "central-1"
    assert cfg.store.url == "postgresql+asyncpg://hallfleet@db/hallfleet"
    assert cfg.ingest.batch_size == 1000
    assert cfg.ingest.share_group == "ingest"
    assert cfg.ingest.batch_wait_ms == 5


def test_consumer_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HALLFLEET_INGEST__BATCH_SIZE", "64")

    cfg = load_settings(ConsumerConfig, write(tmp_path, CONSUMER_TOML))

    assert cfg.ingest.batch_size == 64
    assert cfg.ingest.share_group == "ingest"


def test_consumer_invalid_value_names_the_dotted_field(tmp_path: Path) -> None:
    path = write(tmp_path, CONSUMER_TOML.replace("batch_size = 1000", "batch_size = 0"))

    message = config_error(ConsumerConfig, path)

    assert message.startswith(f"invalid config ({path}):")
    assert names_field(message, "ingest.batch_size", "Input should be greater than or equal to 1")


def test_consumer_unknown_key_is_refused_by_name(tmp_path: Path) -> None:
    path = write(tmp_path, CONSUMER_TOML.replace("[store]\n", "[store]\npool = 5\n"))

    assert names_field(config_error(ConsumerConfig, path), "store.pool", "Extra inputs are not permitted")


# --------------------------------------------------------------------------------------------------
# CLI: a bad config exits 2 with the field named on stderr, no traceback
# --------------------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HALLFLEET_")}
    return subprocess.run(
        [sys.executable, "-m", "hallfleet.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_cli_agent_with_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = write(tmp_path, AGENT_TOML.replace("port = 8883", "port = 70000"))

    result = run_cli("agent", "--config", str(bad))

    assert result.returncode == 2
    assert f"hallfleet: invalid config ({bad}):" in result.stderr
    assert names_field(result.stderr, "mqtt.port", "Input should be less than or equal to 65535")
    assert "Traceback" not in result.stderr


def test_cli_agent_with_missing_file_exits_2(tmp_path: Path) -> None:
    result = run_cli("agent", "--config", str(tmp_path / "nowhere.toml"))

    assert result.returncode == 2
    assert f"config file {tmp_path / 'nowhere.toml'} does not exist" in result.stderr


def test_cli_agent_with_toml_syntax_error_exits_2(tmp_path: Path) -> None:
    bad = write(tmp_path, "site = \n")

    result = run_cli("agent", "--config", str(bad))

    assert result.returncode == 2
    assert f"cannot read config {bad}" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_consumer_with_invalid_config_exits_2_naming_the_field(tmp_path: Path) -> None:
    bad = write(tmp_path, CONSUMER_TOML.replace("batch_size = 1000", "batch_size = 0"))

    result = run_cli("consumer", "--config", str(bad))

    assert result.returncode == 2
    assert f"hallfleet: invalid config ({bad}):" in result.stderr
    assert names_field(result.stderr, "ingest.batch_size", "Input should be greater than or equal to 1")
    assert "Traceback" not in result.stderr


def test_cli_consumer_with_unknown_key_exits_2_naming_it(tmp_path: Path) -> None:
    bad = write(tmp_path, CONSUMER_TOML + "\n[metrics]\nport = 9100\n")

    result = run_cli("consumer", "--config", str(bad))

    assert result.returncode == 2
    assert names_field(result.stderr, "metrics", "Extra inputs are not permitted")


def _readme_consumer_example() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    (block,) = [b for b in re.findall(r"```toml\n(.*?)```", readme, re.S) if "[sites." in b]
    return block


def test_the_readme_sla_example_is_a_valid_consumer_config(tmp_path: Path) -> None:
    cfg = load_settings(ConsumerConfig, write(tmp_path, _readme_consumer_example()))

    qingpu = cfg.sites["qingpu"]
    assert not qingpu.is_always_on("kiosk-24h-1"), "a name is not a 24-hour status (issue 17 item 6)"
    assert qingpu.is_always_on("kiosk-1", registered=True), "the registry's is"
    assert cfg.alerts.recipients["qp-frontdesk"].quiet_hours == "21:00-07:30"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (('start = "07-01"', 'start = "07-02"'), "timetables"),  # July 1st belongs to no timetable
        (("breach_after_min = 30", "breach_after_min = 10"), "sites.qingpu.sla"),
        (('channel = "qp-mail"', 'channel = "qp-sms"'), "alerts"),
        (('quiet_hours = "21:00-07:30"', 'quiet_hours = "9pm"'), "alerts.recipients.qp-frontdesk.quiet_hours"),
    ],
)
def test_a_bad_site_or_alert_setting_stops_the_start_naming_it(
    tmp_path: Path, change: tuple[str, str], field: str
) -> None:
    text = _readme_consumer_example()
    assert change[0] in text
    message = config_error(ConsumerConfig, write(tmp_path, text.replace(*change)))
    assert field in message, message
