import pytest

from engine import config
from engine.errors import UserError


def test_shipped_profiles_load_and_share_one_schema():
    assert {"tiny", "paper"} <= set(config.available_profiles())
    tiny, paper = config.load_profile("tiny"), config.load_profile("paper")
    assert tiny["profile"]["name"] == "tiny" and paper["rank"]["k"] == 1000
    assert {s: set(v) for s, v in tiny.items()} == {s: set(v) for s, v in paper.items()}


def test_overrides_are_typed():
    cfg = config.load_profile("tiny", ["rank.k=7", "steer.tau=5", "model.device=cpu", "record.steps=[1, 2]"])
    assert cfg["rank"]["k"] == 7 and cfg["steer"]["tau"] == 5.0 and cfg["record"]["steps"] == [1, 2]
    with pytest.raises(UserError, match="unknown setting 'rank.kk'"):
        config.load_profile("tiny", ["rank.kk=3"])
    with pytest.raises(UserError, match="must be int"):
        config.load_profile("tiny", ["rank.k=abc"])
    with pytest.raises(UserError, match="not key=value"):
        config.load_profile("tiny", ["rank.k"])


@pytest.mark.parametrize("override, message", [
    (["data.langs=['deu', 'xxx']"], "unknown study language"),
    (["record.steps=[6, 1]"], "increasing"),
    (["record.max_new_tokens=5"], "below the last step"),
    (["steer.positions='sometimes'"], "steer.positions"),
])
def test_contradictions_fail_before_work(override, message):
    with pytest.raises(UserError, match=message):
        config.load_profile("tiny", override)


def test_unknown_profile_names_the_choices():
    with pytest.raises(UserError, match="choose one of"):
        config.load_profile("huge")


def test_k_larger_than_the_catalog_is_refused():
    cfg = config.load_profile("tiny", ["rank.k=5000"])
    with pytest.raises(UserError, match="k=5000"):
        config.check_against_catalog(cfg, n_decoder=1000, n_encoders={"speech_encoder": 2000, "text_encoder": 900})
    config.check_against_catalog(config.load_profile("tiny"), 10_000, {"a": 10_000})
