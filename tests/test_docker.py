"""The compose stack and the image, checked offline: Debian's docker-compose 1.29 resolves the
compose files (``config`` needs no Docker engine), and the Dockerfile's instructions are read."""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from search_engine.config import Settings

DOCKER = Path(__file__).resolve().parent.parent / "docker"
APP_SERVICES = ("init", "worker", "web")
SERVICES = {"elasticsearch", "kibana-password", "kibana", "redis", *APP_SERVICES}


def docker_compose() -> str:
    """The docker-compose binary; CI (Debian, scripts/setup.sh --test) must have it."""
    found = shutil.which("docker-compose")
    if found:
        return found
    if Path("/etc/debian_version").exists():
        pytest.fail("docker-compose is missing; scripts/setup.sh --test installs it (apt-get install docker-compose)")
    pytest.skip("docker-compose is not installed, and only on Debian does scripts/setup.sh --test install it")


def env_file(tmp_path: Path, **values: str) -> Path:
    """A copy of .env.example with some settings filled in."""
    text = (DOCKER / ".env.example").read_text()
    for name, value in values.items():
        text, count = re.subn(rf"^{name}=.*$", f"{name}={value}", text, flags=re.MULTILINE)
        assert count == 1, f"{name} is not in .env.example"
    path = tmp_path / ".env"
    path.write_text(text)
    return path


def compose_config(env: Path, *files: str) -> subprocess.CompletedProcess:
    command = [docker_compose(), "--env-file", str(env)]
    for name in files:
        command += ["-f", str(DOCKER / name)]
    # A bare environment: nothing from this machine's shell may fill in the files' ${...}.
    bare = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(env.parent)}
    return subprocess.run(command + ["config"], capture_output=True, text=True, env=bare, cwd=env.parent, timeout=120)


def resolved(tmp_path: Path, *files: str, **values: str) -> dict:
    env = env_file(tmp_path, ELASTIC_PASSWORD="elastic-secret1", KIBANA_PASSWORD="kibana-secret2", **values)
    result = compose_config(env, *files)
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> dict:
    return resolved(tmp_path_factory.mktemp("compose"), "compose.yml")


@pytest.fixture(scope="module")
def gpu_stack(tmp_path_factory) -> dict:
    return resolved(tmp_path_factory.mktemp("compose-gpu"), "compose.yml", "compose.gpu.yml")


def test_compose_file_validates_with_every_service(stack):
    services = stack["services"]
    assert set(services) == SERVICES
    assert services["worker"]["command"] == ["facesearch", "worker"]
    assert services["web"]["command"] == ["facesearch", "serve", "--host", "0.0.0.0", "--port", "8000"]
    assert services["init"]["command"] == ["facesearch", "init"]
    assert {"esdata", "models", "media", "data"} <= set(stack["volumes"])
    # One image, built once from the repository root, for every app service.
    images = {services[name]["image"] for name in APP_SERVICES}
    assert images == {"facesearch:cpu"}
    for name in APP_SERVICES:
        build = services[name]["build"]
        assert Path(build["context"]) == DOCKER.parent and build["dockerfile"] == "docker/Dockerfile"
        assert build["args"] == {"TORCH_VARIANT": "cpu"}


def test_start_up_order_waits_for_health_and_for_init(stack):
    services = stack["services"]
    assert services["kibana-password"]["depends_on"] == {"elasticsearch": {"condition": "service_healthy"}}
    assert services["kibana"]["depends_on"] == {"kibana-password": {"condition": "service_completed_successfully"}}
    assert services["init"]["depends_on"] == {
        "elasticsearch": {"condition": "service_healthy"},
        "kibana": {"condition": "service_healthy"},
    }
    for name in ("worker", "web"):
        assert services[name]["depends_on"] == {
            "init": {"condition": "service_completed_successfully"},
            "redis": {"condition": "service_healthy"},
        }
    for name in ("elasticsearch", "kibana", "redis", "web"):
        assert services[name]["healthcheck"]["test"], name


def test_elasticsearch_and_redis_settings(stack):
    services = stack["services"]
    es = services["elasticsearch"]
    assert es["image"] == "docker.elastic.co/elasticsearch/elasticsearch:9.5.4"
    assert services["kibana"]["image"] == "docker.elastic.co/kibana/kibana:9.5.4"
    env = es["environment"]
    assert env["discovery.type"] == "single-node" and env["xpack.security.enabled"] == "true"
    assert env["ELASTIC_PASSWORD"] == "elastic-secret1"
    assert env["ES_JAVA_OPTS"] == "-Xms1g -Xmx1g"
    kibana = services["kibana"]["environment"]
    assert kibana["ELASTICSEARCH_USERNAME"] == "kibana_system" and kibana["ELASTICSEARCH_PASSWORD"] == "kibana-secret2"
    assert "noeviction" in services["redis"]["command"]


def test_app_containers_configure_facesearch_for_the_stack(stack):
    services = stack["services"]
    for name in APP_SERVICES:
        env = services[name]["environment"]
        settings = Settings.from_env(env)
        assert settings.index.es_url == "http://elasticsearch:9200"
        assert (settings.index.es_user, settings.index.es_password) == ("elastic", "elastic-secret1")
        assert settings.queue.broker_url == "redis://redis:6379/0"
        assert settings.models.embedder == "facenet" and settings.models.device == "cpu"
        assert settings.index.data_dir == Path("/data") and env["FACESEARCH_MEDIA_ROOTS"] == "/media"
        assert settings.web.web_url == "http://localhost:8000"
        mounts = {volume.split(":")[1]: volume for volume in services[name]["volumes"]}
        assert set(mounts) == {"/data", "/models", "/media"}
        assert mounts["/media"].endswith(":ro")
    assert Settings.from_env(services["init"]["environment"]).web.kibana_url == "http://kibana:5601"


def test_a_host_folder_can_be_the_media(tmp_path):
    stack = resolved(tmp_path, "compose.yml", FACESEARCH_MEDIA="/srv/photos", FACESEARCH_EMBEDDER="dlib")
    worker = stack["services"]["worker"]
    assert "/srv/photos:/media:ro" in worker["volumes"]
    assert worker["environment"]["FACESEARCH_EMBEDDER"] == "dlib"
    # Similar-photo search is off unless .env turns it on, for the workers and the web app alike.
    assert Settings.from_env(worker["environment"]).models.image_search is False
    on = resolved(tmp_path, "compose.yml", FACESEARCH_IMAGE_SEARCH="1")["services"]
    assert all(Settings.from_env(on[name]["environment"]).models.image_search for name in ("worker", "web"))


def test_gpu_overlay_builds_the_cuda_image_and_reserves_gpus(gpu_stack):
    services = gpu_stack["services"]
    assert {services[name]["image"] for name in APP_SERVICES} == {"facesearch:gpu"}
    for name in APP_SERVICES:
        assert services[name]["build"]["args"] == {"TORCH_VARIANT": "cuda"}
    for name in ("worker", "web"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
        assert services[name]["environment"]["FACESEARCH_DEVICE"] == "cuda"
        # The overlay adds to the base environment, it does not replace it.
        assert services[name]["environment"]["FACESEARCH_ES_URL"] == "http://elasticsearch:9200"
    assert "deploy" not in services["init"]


def test_compose_refuses_to_start_without_passwords(tmp_path):
    result = compose_config(env_file(tmp_path), "compose.yml")
    assert result.returncode != 0
    assert "ELASTIC_PASSWORD" in result.stderr or "KIBANA_PASSWORD" in result.stderr


def test_env_example_documents_every_variable_the_compose_files_read():
    read = set()
    for name in ("compose.yml", "compose.gpu.yml"):
        read |= set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", (DOCKER / name).read_text()))
    documented = set(re.findall(r"^([A-Z_][A-Z0-9_]*)=", (DOCKER / ".env.example").read_text(), flags=re.MULTILINE))
    assert read == documented


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined and comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a continued line"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKER / "Dockerfile")


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    found: list[list[tuple[str, str]]] = []
    for instruction in instructions:
        if instruction[0] == "FROM":
            found.append([])
        if found:
            found[-1].append(instruction)
    return found


def test_dockerfile_base_image_is_pinned_and_shared(dockerfile):
    defaults = dict(arg.split("=", 1) for keyword, arg in dockerfile if keyword == "ARG" and "=" in arg)
    bases = []
    for keyword, arguments in dockerfile:
        if keyword == "FROM":
            image = arguments.split()[0]
            bases.append(re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], image))
    assert len(bases) == 2, "a build stage and a runtime stage"
    for image in bases:
        name, _, tag = image.partition(":")
        assert name == "python" and re.match(r"^\d+\.\d+\.\d+-", tag), f"{image} is not pinned to a release"
    assert bases[0] == bases[1], "the venv copied between stages needs the same interpreter"


def test_dockerfile_runtime_stage_runs_unprivileged_with_a_healthcheck(dockerfile):
    build, runtime = stages(dockerfile)
    users = [arguments for keyword, arguments in runtime if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the final stage must not run as root"
    healthcheck = [arguments for keyword, arguments in runtime if keyword == "HEALTHCHECK"]
    assert healthcheck and "facesearch" in healthcheck[0] and "healthcheck" in healthcheck[0]
    env = " ".join(arguments for keyword, arguments in runtime if keyword == "ENV")
    assert "OPENBLAS_NUM_THREADS=1" in env and "TORCH_HOME=/models/torch" in env
    installs = " ".join(arguments for keyword, arguments in build + runtime if keyword == "RUN")
    for compiler in ("build-essential", "cmake", "gcc", "-dev"):
        assert compiler not in installs, f"{compiler}: the image installs wheels only"
    assert any(keyword == "COPY" and arguments.startswith("--from=build") for keyword, arguments in runtime)


def test_dockerfile_holds_no_secrets(dockerfile):
    secret = re.compile(r"(PASSWORD|SECRET|TOKEN|API_KEY|APIKEY)", re.IGNORECASE)
    for keyword, arguments in dockerfile:
        if keyword in ("ENV", "ARG", "LABEL"):
            for word in shlex.split(arguments):
                assert not secret.search(word.split("=", 1)[0]), f"{keyword} {word}"


def test_the_image_gets_every_package_the_wheel_ships(dockerfile):
    """setup.cfg's packages are copied into the build stage and let through .dockerignore."""
    import configparser

    config = configparser.ConfigParser()
    config.read(DOCKER.parent / "setup.cfg")
    packages = [line.rstrip("*") for line in config["options.packages.find"]["include"].split()]
    copied = {arguments.split()[0] for keyword, arguments in stages(dockerfile)[0] if keyword == "COPY"}
    allowed = set((DOCKER.parent / ".dockerignore").read_text().split())
    for package in packages:
        assert package in copied, f"the Dockerfile does not COPY {package}/"
        assert f"!{package}/" in allowed, f".dockerignore keeps {package}/ out of the build context"
