import os
from pathlib import Path

import pytest

from search_engine.config import Settings
from search_engine.errors import ConfigError


def test_defaults_and_overrides():
    settings = Settings.from_env({})
    assert settings.models.embedder == "auto" and settings.index.backend == "embedded"
    settings = Settings.from_env(
        {
            "FACESEARCH_EMBEDDER": "dlib",
            "FACESEARCH_DATA_DIR": "/tmp/fs",
            "FACESEARCH_ES_URL": "https://es.example:9200",
            "FACESEARCH_ES_API_KEY": "key",
            "FACESEARCH_MIN_PROBABILITY": "0.95",
            "FACESEARCH_BATCH_SIZE": "8",
            "FACESEARCH_FACENET_WEIGHTS": "~/w.pt",
        }
    )
    assert settings.models.embedder == "dlib" and settings.index.data_dir == Path("/tmp/fs")
    assert settings.index.backend == "elasticsearch" and settings.index.es_api_key == "key"
    assert settings.models.min_probability == 0.95 and settings.models.batch_size == 8
    assert settings.models.facenet_weights == Path("~/w.pt").expanduser()
    assert settings.replace(batch_size=4).models.batch_size == 4


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FACESEARCH_EMBEDDER": "arcface"}, "FACESEARCH_EMBEDDER"),
        ({"FACESEARCH_BATCH_SIZE": "many"}, "FACESEARCH_BATCH_SIZE"),
        ({"FACESEARCH_MIN_PROBABILITY": "2"}, "FACESEARCH_MIN_PROBABILITY"),
        ({"FACESEARCH_MAX_UPLOAD_BYTES": "0"}, "FACESEARCH_MAX_UPLOAD_BYTES"),
        ({"FACESEARCH_MAX_UPLOAD_BYTES": "20MB"}, "FACESEARCH_MAX_UPLOAD_BYTES"),
        ({"FACESEARCH_RESULTS_PER_PAGE": "0"}, "FACESEARCH_RESULTS_PER_PAGE"),
        ({"FACESEARCH_API_KEYS": "a b,c"}, "FACESEARCH_API_KEYS"),
        ({"FACESEARCH_SAME_PERSON_THRESHOLD": "1.5"}, "FACESEARCH_SAME_PERSON_THRESHOLD"),
        ({"FACESEARCH_EXPANSION_NEIGHBOURS": "-1"}, "FACESEARCH_EXPANSION_NEIGHBOURS"),
        ({"FACESEARCH_EXPANSION_THRESHOLD": "1"}, "FACESEARCH_EXPANSION_THRESHOLD"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings.from_env({}).models.embedder = "dlib"


def test_stack_settings():
    settings = Settings.from_env({})
    assert (
        settings.models.device == "cpu"
        and settings.web.kibana_url is None
        and settings.web.web_url == "http://localhost:8000"
    )
    settings = Settings.from_env(
        {
            "FACESEARCH_DEVICE": "cuda",
            "FACESEARCH_KIBANA_URL": "http://kibana:5601",
            "FACESEARCH_WEB_URL": "https://faces.example.org",
        }
    )
    assert settings.models.device == "cuda" and settings.web.kibana_url == "http://kibana:5601"
    assert settings.web.web_url == "https://faces.example.org"
    with pytest.raises(ConfigError, match="FACESEARCH_WEB_URL"):
        Settings.from_env({"FACESEARCH_WEB_URL": "faces.example.org"})
    with pytest.raises(ConfigError, match="FACESEARCH_KIBANA_URL"):
        Settings.from_env({"FACESEARCH_KIBANA_URL": "kibana:5601"})


def test_web_settings_from_env(tmp_path):
    roots = f"{tmp_path / 'photos'}{os.pathsep}~/videos{os.pathsep}"
    settings = Settings.from_env(
        {
            "FACESEARCH_MEDIA_ROOTS": roots,
            "FACESEARCH_MAX_UPLOAD_BYTES": "1000",
            "FACESEARCH_API_KEYS": " one, two ,",
            "FACESEARCH_RESULTS_PER_PAGE": "12",
            "FACESEARCH_KEEP_UPLOADS": str(tmp_path / "kept"),
            "FACESEARCH_SAME_PERSON_THRESHOLD": "0.8",
        }
    )
    assert settings.web.media_roots == (tmp_path / "photos", Path("~/videos").expanduser())
    assert settings.web.max_upload_bytes == 1000 and settings.web.results_per_page == 12
    assert settings.web.api_keys == ("one", "two")
    assert settings.web.keep_uploads == tmp_path / "kept" and settings.search.same_person_threshold == 0.8
    defaults = Settings.from_env({})
    assert defaults.web.media_roots == () and defaults.web.api_keys == () and defaults.web.keep_uploads is None
    assert defaults.web.max_upload_bytes == 20_000_000 and defaults.web.results_per_page == 20


def test_tracks_link_at_the_calibrated_pair_threshold():
    from search_engine.calibration import shipped_calibration
    from search_engine.embedding import track_link_similarity
    from search_engine.types import EmbedderInfo

    dlib, other = EmbedderInfo("dlib", "r1", 128), EmbedderInfo("facenet", "vggface2-r1", 512)
    assert track_link_similarity(dlib, shipped_calibration(dlib)) == shipped_calibration(dlib).pair_threshold
    assert track_link_similarity(other, None) == 0.395


def test_target_fpir_is_a_share():
    assert Settings.from_env({"FACESEARCH_TARGET_FPIR": "0.02"}).search.target_fpir == 0.02
    with pytest.raises(ConfigError, match="FACESEARCH_TARGET_FPIR"):
        Settings.of(target_fpir=1.5)


def test_expansion_threshold_is_measured_or_calibrated_per_embedder_and_settable():
    from search_engine.calibration import Calibration
    from search_engine.embedding import expansion_threshold
    from search_engine.types import EmbedderInfo

    dlib, other = EmbedderInfo("dlib", "r1", 128), EmbedderInfo("facenet", "vggface2-r1", 512)
    assert Settings.from_env({}).search.expansion_neighbours == 3
    calibrated = Calibration(other.key, 0.4321, 0.03, 1000, 1000, 0.35, "made up")
    assert expansion_threshold(Settings().search, dlib, calibrated) == 0.93
    assert expansion_threshold(Settings().search, other, None) is None
    assert expansion_threshold(Settings().search, other, calibrated) == 0.432
    settings = Settings.from_env({"FACESEARCH_EXPANSION_THRESHOLD": "0.6", "FACESEARCH_EXPANSION_NEIGHBOURS": "0"})
    assert expansion_threshold(settings.search, other, calibrated) == 0.6 and settings.search.expansion_neighbours == 0


def test_the_readme_table_is_the_declared_settings():
    from search_engine.config import settings_table

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert settings_table() in readme, "README's configuration table: paste `python -m search_engine.config`"


def test_every_setting_of_the_stack_env_example_is_declared_and_valid():
    """docker/.env.example sets facesearch settings (checked as facesearch reads them) and
    variables only compose.yml reads (named there as ${VARIABLE})."""
    import re

    from search_engine.config import declarations

    docker = Path(__file__).resolve().parent.parent / "docker"
    example = dict(re.findall(r"^(FACESEARCH_\w+)=(.*)$", (docker / ".env.example").read_text(), re.M))
    compose = "".join(path.read_text() for path in docker.glob("compose*.yml"))
    declared = {variable for variable, _, _ in declarations()}
    for name, value in example.items():
        assert name in declared or "${" + name in compose, f"{name} is neither a setting nor used by compose"
    Settings.from_env({k: v for k, v in example.items() if k in declared})
