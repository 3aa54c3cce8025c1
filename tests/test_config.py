from pathlib import Path

import pytest

from search_engine.config import Settings
from search_engine.errors import ConfigError


def test_defaults_and_overrides():
    settings = Settings.from_env({})
    assert settings.embedder == "auto" and settings.backend == "embedded"
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
    assert settings.embedder == "dlib" and settings.data_dir == Path("/tmp/fs")
    assert settings.backend == "elasticsearch" and settings.es_api_key == "key"
    assert settings.min_probability == 0.95 and settings.batch_size == 8
    assert settings.facenet_weights == Path("~/w.pt").expanduser()
    assert settings.replace(batch_size=4).batch_size == 4


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FACESEARCH_EMBEDDER": "arcface"}, "FACESEARCH_EMBEDDER"),
        ({"FACESEARCH_BATCH_SIZE": "many"}, "FACESEARCH_BATCH_SIZE"),
        ({"FACESEARCH_MIN_PROBABILITY": "2"}, "FACESEARCH_MIN_PROBABILITY"),
    ],
)
def test_bad_values_name_the_variable(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_settings_are_frozen():
    with pytest.raises(AttributeError):
        Settings.from_env({}).embedder = "dlib"


def test_stack_settings():
    settings = Settings.from_env({})
    assert settings.device == "cpu" and settings.kibana_url is None and settings.web_url == "http://localhost:8000"
    settings = Settings.from_env(
        {
            "FACESEARCH_DEVICE": "cuda",
            "FACESEARCH_KIBANA_URL": "http://kibana:5601",
            "FACESEARCH_WEB_URL": "https://faces.example.org",
        }
    )
    assert settings.device == "cuda" and settings.kibana_url == "http://kibana:5601"
    assert settings.web_url == "https://faces.example.org"
    with pytest.raises(ConfigError, match="FACESEARCH_WEB_URL"):
        Settings.from_env({"FACESEARCH_WEB_URL": "faces.example.org"})
    with pytest.raises(ConfigError, match="FACESEARCH_KIBANA_URL"):
        Settings.from_env({"FACESEARCH_KIBANA_URL": "kibana:5601"})
