"""Models in and out of MongoDB: the model's own id field is stored as ``_id`` (its primary key), nothing else
changes, so Mongo field = model field = JSON key everywhere else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def to_mongo(model: BaseModel, id_field: str = "id") -> dict[str, Any]:
    document = model.model_dump(mode="python")
    document["_id"] = document.pop(id_field)
    return document


def from_mongo(model_type: type[M], document: Mapping[str, Any], id_field: str = "id") -> M:
    fields = dict(document)
    fields[id_field] = fields.pop("_id")
    return model_type.model_validate(fields)
