"""The example configs and the key reference are generated from the models: regenerated here and compared with
the committed files, each example loads back into the model it was built from, and `hallfleet config check|show`
answer as a newcomer needs (one line per bad field, secrets masked)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hallfleet.cli import main as hallfleet_main
from hallfleet.config_cli import KINDS, REPO
from hallfleet.config_examples import build, example_data, generate
from hallfleet.configdoc import MASK, undocumented
from provisioning.bundle import SECTION_ROLES

EXAMPLES = REPO / "docs" / "examples"


def test_committed_examples_and_reference_are_what_the_models_generate() -> None:
    stale = [str(rel) for rel, text in generate().items() if (REPO / rel).read_text(encoding="utf-8") != text]
    assert not stale, f"run `hallfleet config generate`: {stale} differ from the models"


def test_every_key_of_every_kind_has_a_description() -> None:
    for kind in KINDS.values():
        assert undocumented(kind.model()) == [], kind.name


def test_every_agent_role_with_hardware_has_an_example_of_its_own() -> None:
    """A newcomer fitting a door controller or a locker bank finds its section filled in, not only the key list."""
    examples = {data["role"] for kind, data in example_data().values() if kind == "agent"}
    assert examples == {"sim", *SECTION_ROLES}, "add the role to hallfleet/config_examples.py"


@pytest.mark.parametrize("stem", sorted(example_data()))
def test_each_example_loads_back_into_the_config_it_was_generated_from(
    stem: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(EXAMPLES)  # the API's centre_config is relative to its own file
    kind, data = example_data()[stem]
    loaded = KINDS[kind].load(Path(f"{stem}.toml"))
    expected = build(kind, data)
    assert loaded.model_dump(exclude={"centre"}) == expected.model_dump(exclude={"centre"})
    assert hallfleet_main(["config", "check", f"{stem}.toml"]) == 0
    assert capsys.readouterr().out.strip() == f"ok ({kind})"


def test_check_names_each_bad_field_on_one_line_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "agent.toml"
    text = (EXAMPLES / "agent-sim.toml").read_text().replace("heartbeat_s = 30.0", "heartbeat_s = 0")
    bad.write_text(text.replace("port = 8883", 'port = "eighty"'))
    assert hallfleet_main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2, err
    assert err[0].startswith(f"{bad}: heartbeat_s: ") and err[1].startswith(f"{bad}: mqtt.port: ")


def test_check_tells_the_kind_by_its_keys_and_asks_for_kind_when_it_cannot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("# nothing yet\n")
    assert hallfleet_main(["config", "check", str(empty)]) == 1
    assert "--kind" in capsys.readouterr().err
    assert hallfleet_main(["config", "check", "--kind", "consumer", str(empty)]) == 0  # all defaults
    assert hallfleet_main(["config", "check", str(tmp_path / "missing.toml")]) == 1
    assert "does not exist" in capsys.readouterr().err
    broken = tmp_path / "broken.toml"
    broken.write_text("site = \n")
    assert hallfleet_main(["config", "check", str(broken)]) == 1
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_api_check_also_checks_the_consumer_config_it_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(EXAMPLES / "api.toml", tmp_path / "api.toml")
    (tmp_path / "consumer.toml").write_text("[ingest]\nbatch_size = 0\n")
    assert hallfleet_main(["config", "check", str(tmp_path / "api.toml")]) == 1
    assert "ingest.batch_size" in capsys.readouterr().err


def test_show_prints_the_effective_config_with_every_secret_masked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "consumer.toml"
    cfg.write_text(
        (EXAMPLES / "consumer.toml").read_text()
        + '\n[alerts.channels.robot]\ntype = "wecom"\nurl = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=KEY123"\n'
        + '\n[alerts.channels.hook]\ntype = "webhook"\nurl = "https://ops.hall.local/h"\n'
        + 'headers = {Authorization = "Bearer TOKEN456", "X-Site" = "qingpu"}\n'
    )
    monkeypatch.setenv("HALLFLEET_STORE__URL", "postgresql+asyncpg://hallfleet:PW789@db.hall.local/hallfleet")
    monkeypatch.setenv("HALLFLEET_INGEST__BATCH_SIZE", "777")
    assert hallfleet_main(["config", "show", str(cfg)]) == 0
    out = capsys.readouterr().out
    for secret in ("KEY123", "TOKEN456", "PW789"):
        assert secret not in out
    assert f"postgresql+asyncpg://hallfleet:{MASK}@db.hall.local/hallfleet" in out
    assert f"key={MASK}" in out and f'Authorization = "{MASK}"' in out and 'X-Site = "qingpu"' in out
    assert "batch_size = 777" in out  # the environment wins, as at start
    assert "# Commit when this many messages wait" in out
