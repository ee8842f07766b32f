import pytest

from engine.errors import UserError
from engine.pipeline import config


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


# --- every setting checked before any work (issue 10) ------------------------------------------
@pytest.mark.parametrize("override, message", [
    ("model.dtype='float8'", "model.dtype='float8' is invalid: use one of float32, bfloat16, float16, auto"),
    ("record.rows_per_block=0", "record.rows_per_block=0 is invalid: use an integer >= 1"),
    ("model.batch_size=0", "model.batch_size=0 is invalid: use an integer >= 1"),
    ("record.store_dtype='int3'", "record.store_dtype='int3' is invalid: use one of float16, bfloat16, float32, auto"),
    ("data.n_identify=0", "data.n_identify=0 is invalid: use an integer >= 1"),
    ("data.n_identify=100000", "data.n_identify + data.n_steer = 100008 exceeds the 6240 sentences of the embedded "
                               "corpus; lower data.n_identify to at most 6232"),
    ("data.n_steer=0", "data.n_steer=0 is invalid: use an integer >= 1"),
    ("data.seed=-1", "data.seed=-1 is invalid: use an integer >= 0"),
    ("rank.k=0", "rank.k=0 is invalid: use an integer >= 1"),
    ("rank.n_boot=0", "rank.n_boot=0 is invalid: use an integer >= 1"),
    ("rank.k_sweep=[50, 10]", "rank.k_sweep=[50, 10] is invalid: give increasing integers >= 1"),
    ("rank.k_sweep=[]", "rank.k_sweep=[] is invalid"),
    ("record.steps=[1.5, 6.0]", "record.steps=[1.5, 6.0] is invalid: give a list of int like [1, 6, 11]"),
    ("steer.tau=-1", "steer.tau=-1.0 is invalid: use a number >= 0"),
    ("steer.tau=nan", "steer.tau=nan is invalid: use a number >= 0"),
    ("steer.tau=101", "steer.tau=101.0 is invalid: it is a control rate in percent: use 0 to 100"),
    ("steer.max_new_tokens=0", "steer.max_new_tokens=0 is invalid: use an integer >= 1"),
    ("speech.fixed_frames=-5", "speech.fixed_frames=-5 is invalid: use an integer >= 0"),
    ("model.device='gpu'", "model.device='gpu' is invalid: use cpu, cuda or cuda:<index>"),
    ("model.id=''", "model.id='' is invalid: it must not be empty"),
    ("speech.backend='natural'", "speech.backend='natural' is invalid: recorded speech exists only for FLEURS"),
    ("data.fleurs_root='/some/copy'", "data.fleurs_root='/some/copy' is invalid: it is read only with "
                                      "data.source=fleurs"),
    ("prompts.S2T='Into {lang}.'", "prompts.S2T='Into {lang}.' is invalid: its only placeholder may be {target}"),
    ("prompts.TR=' '", "prompts.TR=' ' is invalid: it must not be empty"),
])
def test_every_setting_is_checked_with_one_line_naming_it(override, message):
    with pytest.raises(UserError) as err:
        config.load_profile("tiny", [override])
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


@pytest.mark.parametrize("accepted", ["model.dtype='bfloat16'", "model.dtype='auto'", "model.dtype='bf16'",
                                      "record.store_dtype='float32'", "record.store_dtype='bfloat16'",
                                      "record.store_dtype='auto'", "model.device='cuda:1'", "steer.k=0",
                                      "data.n_identify=1"])
def test_valid_values_are_accepted(accepted):
    config.load_profile("tiny", [accepted])


def test_profile_file_settings_are_typed_and_known(tmp_path):
    text = (config.PROFILE_DIR / "tiny.toml").read_text()
    bad_type = tmp_path / "a.toml"
    bad_type.write_text(text.replace("batch_size = 16", 'batch_size = "16"'))
    with pytest.raises(UserError, match=r"model.batch_size='16' is invalid: give an int like 16"):
        config.load_profile(str(bad_type))
    typo = tmp_path / "b.toml"
    typo.write_text(text.replace("[output]", "[output]\nrooot = 'x'"))
    with pytest.raises(UserError, match=r"unknown setting \[output\] rooot"):
        config.load_profile(str(typo))


def test_steering_pairs_are_checked_when_the_steer_stage_is_asked_for():
    cfg = config.load_profile("tiny", ["data.langs=['deu', 'spa']"])
    with pytest.raises(UserError, match=r"data.langs=\['deu', 'spa'\] contains no steering pair .* --stages"):
        config.check_stages(cfg, ("data", "steer"))
    config.check_stages(cfg, ("data", "speech", "record", "rank", "compare"))
    config.check_stages(config.load_profile("tiny", ["data.langs=['fra', 'jpn']"]), ("steer",))
