"""The faces and sources indices' layout on a cluster: an index template, a versioned index and
an alias per kind (:mod:`.mapping` names them); created where missing, checked, and dropped.
Every function talks to the cluster through the client it is given; callers translate errors."""

from __future__ import annotations

import logging

from elasticsearch import BadRequestError, Elasticsearch

from ..errors import DimensionMismatchError, IndexUnavailableError
from ..types import FILLED_FROM, EmbedderInfo
from .elastic_client import error_type
from .mapping import (
    IMAGE_BITS_FIELD,
    MIN_SERVER_VERSION,
    IndexNames,
    copy_field_body,
    decisions_mapping,
    embedding_dims,
    faces_mapping,
    images_mapping,
    index_settings,
    index_template,
    knows_exclude_source_vectors,
    missing_properties,
    people_mapping,
    server_version,
    sources_mapping,
)

log = logging.getLogger(__name__)


def check_server(client: Elasticsearch, url: str) -> None:
    """Refuse a server older than :data:`~.mapping.MIN_SERVER_VERSION`, whose mappings would fail.

    Raises:
        IndexUnavailableError: naming the server, its version and the version needed.
    """
    number = client.info()["version"]["number"]
    version = server_version(number)
    if version is not None and version < MIN_SERVER_VERSION:
        needed = ".".join(map(str, MIN_SERVER_VERSION))
        raise IndexUnavailableError(
            f"Elasticsearch at {url} runs {number}; facesearch needs {needed} or later (photos' "
            f"hashes are searched as bit vectors, new in {needed}); upgrade the cluster or use the embedded index"
        )


def create_missing(
    client: Elasticsearch,
    names: IndexNames,
    model: EmbedderInfo,
    shards: int,
    replicas: int | None,
    vector_index: str,
) -> None:
    """Create the template, versioned index and alias of each kind whose alias is missing."""
    missing = [alias for alias in names.aliases if not client.indices.exists_alias(name=alias)]
    if not missing:
        return
    version = client.info()["version"]["number"]
    faces_settings = index_settings(shards, replicas, keep_source_vectors=knows_exclude_source_vectors(version))
    plans = {
        names.faces_alias: (faces_mapping(model.dim, vector_index), faces_settings),
        names.sources_alias: (sources_mapping(), index_settings()),
        names.people_alias: (people_mapping(), index_settings()),
        names.decisions_alias: (decisions_mapping(), index_settings()),
    }
    for alias in missing:
        _create(client, alias, names.index_of(alias), *plans[alias])


def _create(client: Elasticsearch, alias: str, index: str, mappings: dict, settings: dict) -> None:
    indices = client.indices
    # The template has the alias's name.
    indices.put_index_template(name=alias, body=index_template(alias, mappings, settings))
    try:
        indices.create(index=index, settings=settings, mappings=mappings, aliases={alias: {}})
        log.info("created Elasticsearch index %s behind alias %s", index, alias)
    except BadRequestError as exc:
        # Another worker created it first, or the alias was removed from a surviving index.
        if error_type(exc) != "resource_already_exists_exception":
            raise
        indices.put_alias(index=index, name=alias)


def check_indices(client: Elasticsearch, names: IndexNames, model: EmbedderInfo) -> None:
    """Refuse a faces index that holds vectors of another size than the model's, and add the
    fields that faces and sources indices made by an older version lack.

    Raises:
        DimensionMismatchError: naming the index, what it holds and what to do.
    """
    alias = names.faces_alias
    for index, body in client.indices.get_mapping(index=alias).body.items():
        mappings = body.get("mappings", {})
        dims = embedding_dims(mappings)
        if dims != model.dim:
            held = f"{dims}-d vectors" if dims is not None else "no dense_vector 'embedding' field"
            raise DimensionMismatchError(
                f"the Elasticsearch index {index} (alias {alias}) holds {held} but the {model.key} "
                f"embedder makes {model.dim}-d ones; delete that index or choose another "
                "FACESEARCH_ES_INDEX_PREFIX"
            )
        missing = missing_properties(mappings, faces_mapping(model.dim))
        if missing:
            log.info("adding fields %s to %s", sorted(missing), index)
            client.indices.put_mapping(index=index, properties=missing)
            for field, copied in FILLED_FROM.items():
                if field in missing:
                    client.update_by_query(
                        index=index, conflicts="proceed", refresh=True, **copy_field_body(copied, field)
                    )
    for index, body in client.indices.get_mapping(index=names.sources_alias).body.items():
        missing = missing_properties(body.get("mappings", {}), sources_mapping())
        if missing:
            log.info("adding fields %s to %s", sorted(missing), index)
            client.indices.put_mapping(index=index, properties=missing)
            if IMAGE_BITS_FIELD in missing:
                body = copy_field_body("image_hash", IMAGE_BITS_FIELD)
                client.update_by_query(index=index, conflicts="proceed", refresh=True, **body)


def create_images_index(client: Elasticsearch, alias: str, model: EmbedderInfo, vector_index: str) -> None:
    """Create the similar-photo index of image model ``model`` (template, versioned index, alias)
    where its alias is missing, else refuse one of another vector size.

    Raises:
        DimensionMismatchError: naming the index, what it holds and what to do.
    """
    if not client.indices.exists_alias(name=alias):
        version = client.info()["version"]["number"]
        settings = index_settings(keep_source_vectors=knows_exclude_source_vectors(version))
        _create(client, alias, IndexNames.index_of(alias), images_mapping(model.dim, vector_index), settings)
    for index, body in client.indices.get_mapping(index=alias).body.items():
        dims = embedding_dims(body.get("mappings", {}))
        if dims != model.dim:
            raise DimensionMismatchError(
                f"the Elasticsearch index {index} (alias {alias}) holds {dims}-d vectors but the "
                f"{model.key} image model makes {model.dim}-d ones; delete that index or choose another "
                "FACESEARCH_ES_INDEX_PREFIX"
            )


def drop_all(client: Elasticsearch, names: IndexNames) -> None:
    """Delete every kind's indices (every version behind the aliases) and their templates."""
    drop_aliases(client, names.aliases)


def drop_aliases(client: Elasticsearch, aliases: tuple[str, ...]) -> None:
    """Delete the indices behind these aliases (every version, and this version's index whatever
    the alias points at) and their templates."""
    quiet = client.options(ignore_status=404)
    indices = {IndexNames.index_of(alias) for alias in aliases}
    for alias in aliases:
        response = quiet.indices.get_alias(name=alias)
        if response.meta.status == 200:
            indices.update(response.body)
    # Named one by one: wildcard deletes are refused under action.destructive_requires_name.
    quiet.indices.delete(index=sorted(indices), ignore_unavailable=True)
    for alias in aliases:
        quiet.indices.delete_index_template(name=alias)
    log.info("dropped Elasticsearch indices %s", ", ".join(sorted(indices)))
