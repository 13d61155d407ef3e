"""The task registry: ``@task`` binds a function to an engine under ``<engine>.<name>``.

The registry is filled at import time (built-in demo tasks, then ``ENGINEROOM_TASK_MODULES``) and read-only
afterwards; every process imports the same modules, so the gateway validates exactly what workers run.
"""

from __future__ import annotations

import importlib
import inspect
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, create_model

from engineroom.core.config import ENGINES
from engineroom.core.errors import InvalidRequest
from engineroom.models.task import TaskInfo

if TYPE_CHECKING:
    from engineroom.services.context import JobContext

TaskFn = Callable[..., Any]
F = TypeVar("F", bound=TaskFn)

#: Modules that ship with engineroom and are always imported.
BUILTIN_TASK_MODULES = ("engineroom.actors.demo",)


@dataclass(frozen=True)
class Task:
    """A registered task: the function, its limits, and the payload model built from its signature."""

    engine: str
    name: str
    fn: TaskFn
    payload_model: type[BaseModel]
    max_retries: int
    timeout_s: float | None
    description: str | None
    #: Exceptions that always retry / always fail at once, on top of TransientError / PermanentError.
    retry_on: tuple[type[BaseException], ...] = ()
    fail_on: tuple[type[BaseException], ...] = ()

    @property
    def full_name(self) -> str:
        return f"{self.engine}.{self.name}"

    def validate_payload(self, payload: dict[str, Any]) -> dict[str, Any]:
        """The payload as the task's keyword arguments.

        Raises:
          InvalidRequest: the payload does not fit the task's signature; the message names each problem.
        """
        try:
            model = self.payload_model.model_validate(payload)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'payload'}: {error['msg']}" for error in exc.errors()
            )
            raise InvalidRequest(f"invalid payload for {self.full_name}: {problems}") from None
        return dict(model)

    def info(self) -> TaskInfo:
        return TaskInfo(
            name=self.full_name,
            engine=self.engine,
            description=self.description,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
            payload_schema=self.payload_model.model_json_schema(),
        )

    def __call__(self, ctx: JobContext, **payload: Any) -> Any:
        return self.fn(ctx, **payload)


_registry: dict[str, Task] = {}


def _payload_model(full_name: str, fn: TaskFn) -> type[BaseModel]:
    """A pydantic model of the task's keyword parameters (all but the first, which is the context)."""
    parameters = list(inspect.signature(fn).parameters.values())
    hints = typing.get_type_hints(fn)  # resolves string annotations (``from __future__ import annotations``)
    if not parameters:
        raise TypeError(f"task {full_name} must take a JobContext as its first parameter")
    fields: dict[str, Any] = {}
    for parameter in parameters[1:]:
        if parameter.kind not in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY):
            raise TypeError(f"task {full_name}: parameter {parameter.name} must be a plain or keyword-only one")
        annotation = hints.get(parameter.name, Any)
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    model_name = "".join(part.title() for part in full_name.replace(".", "_").split("_")) + "Payload"
    return create_model(model_name, __config__=ConfigDict(extra="forbid"), **fields)


def task(
    engine: str,
    *,
    name: str | None = None,
    max_retries: int = 3,
    timeout_s: float | None = 300.0,
    retry_on: Iterable[type[BaseException]] = (),
    fail_on: Iterable[type[BaseException]] = (),
) -> Callable[[F], F]:
    """Register a function as the task ``<engine>.<name>``.

    ``retry_on`` / ``fail_on`` name exception classes that retry or fail at once (``fail_on`` wins); see
    ``actors/failures.py`` for how everything else is judged.

    Raises:
      ValueError: unknown engine, duplicate name or bad limits (at import, not at first run).
      TypeError: the function is a coroutine or its signature cannot become a payload.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown engine {engine!r}; engines are {', '.join(ENGINES)}")
    if max_retries < 0:
        raise ValueError("max_retries must be >= 0")
    if timeout_s is not None and timeout_s <= 0:
        raise ValueError("timeout_s must be positive")

    def register(fn: F) -> F:
        task_name = name or fn.__name__
        full_name = f"{engine}.{task_name}"
        if inspect.iscoroutinefunction(fn):
            raise TypeError(f"task {full_name}: async tasks are not supported yet; write a plain function")
        if full_name in _registry and _registry[full_name].fn is not fn:
            raise ValueError(f"task {full_name} is already registered")
        _registry[full_name] = Task(
            engine=engine,
            name=task_name,
            fn=fn,
            payload_model=_payload_model(full_name, fn),
            max_retries=max_retries,
            timeout_s=timeout_s,
            description=inspect.getdoc(fn),
            retry_on=tuple(retry_on),
            fail_on=tuple(fail_on),
        )
        return fn

    return register


def load_task_modules(extra_modules: Iterable[str] = ()) -> None:
    """Import the built-in and user task modules, filling the registry."""
    for module in (*BUILTIN_TASK_MODULES, *extra_modules):
        importlib.import_module(module)


def get_task(full_name: str) -> Task:
    """The registered task.

    Raises:
      InvalidRequest: no such task.
    """
    try:
        return _registry[full_name]
    except KeyError:
        raise InvalidRequest(f"unknown task {full_name!r}; GET /tasks lists the registered ones") from None


def all_tasks() -> list[Task]:
    return sorted(_registry.values(), key=lambda registered: registered.full_name)
