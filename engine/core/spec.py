"""Pipeline file models (pydantic v2) and the resolved step the executor runs.

A `Pipeline` is exactly what the user wrote (validated); `resolve_steps` applies
`defaults` and the engine's own defaults and returns `ResolvedStep`s with every field set.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from engine.core.config import RepoConfig as RepoConfig  # re-exported: part of the file format
from engine.core.config import ResultsConfig as ResultsConfig
from engine.core.config import StrictModel
from engine.core.manifest import Outcome as Outcome  # re-exported
from engine.core.values import (
    NAME_PATTERN,
    Capability,
    Duration,
    EnvName,
    Memory,
    ParamName,
    ParamValue,
    SecretName,
)

# Engine defaults where neither the step nor `defaults` says.
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_BACKOFF_S = 10.0
DEFAULT_MAX_BACKOFF_S = 300.0
DEFAULT_PIDS = 1024  # processes and threads a step's container may hold at once
# A step's container drops every capability but these, which ordinary steps run as root need
# (write files it does not own, chown, chmod, su/gosu to another user, kill its own children);
# `capabilities:` adds more (docs/pipeline-format.md).
DEFAULT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "SETGID", "SETUID")


class StepType(StrEnum):
    training = "training"
    evaluation = "evaluation"
    deployment = "deployment"
    custom = "custom"


RETRYABLE_DEFAULT = (Outcome.failed, Outcome.timed_out, Outcome.oom_killed)


class CronSchedule(StrictModel):
    schedule: str
    timezone: str = "UTC"
    catchup: Literal["latest", "all"] = "latest"


class PushSpec(StrictModel):
    paths: list[str] = Field(default_factory=list)


class WebhookSpec(StrictModel):
    event: Annotated[str, Field(min_length=1, max_length=100)]


class DriftSpec(StrictModel):
    monitor: str
    when: str = "metrics.drift_detected"
    cooldown: Duration = 6 * 3600.0


class Trigger(StrictModel):
    """One automatic trigger: exactly one of `cron`, `push`, `webhook`, `drift`."""

    cron: str | CronSchedule | None = None
    push: PushSpec | None = None
    webhook: WebhookSpec | None = None
    drift: DriftSpec | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Trigger:
        given = [k for k in ("cron", "push", "webhook", "drift") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a trigger has exactly one of cron, push, webhook, drift"
                + (f" (found {', '.join(given)})" if given else "")
            )
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("cron", "push", "webhook", "drift") if getattr(self, k) is not None)

    @property
    def cron_schedule(self) -> CronSchedule | None:
        if isinstance(self.cron, str):
            return CronSchedule(schedule=self.cron)
        return self.cron


class RetryPolicy(StrictModel):
    limit: Annotated[int, Field(ge=0, le=100)] = 0
    backoff: Duration = DEFAULT_BACKOFF_S
    factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    max_backoff: Duration = DEFAULT_MAX_BACKOFF_S
    outcomes: list[Outcome] = Field(default_factory=lambda: list(RETRYABLE_DEFAULT))

    @field_validator("outcomes")
    @classmethod
    def _no_cancelled(cls, value: list[Outcome]) -> list[Outcome]:
        if Outcome.succeeded in value or Outcome.cancelled in value:
            raise ValueError("outcomes may name failed, timed_out, oom_killed, error")
        return value


def _retries(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"limit": value}
    return value


Retries = Annotated[
    RetryPolicy, BeforeValidator(_retries, json_schema_input_type=int | RetryPolicy)
]


class Resources(StrictModel):
    cpus: Annotated[float, Field(gt=0, le=1024)] | None = None
    memory: Memory | None = None
    gpus: Annotated[int, Field(ge=-1, le=64)] = 0  # -1: all GPUs
    pids: Annotated[int, Field(ge=1, le=4194304)] | None = None  # None: DEFAULT_PIDS


class BuildSpec(StrictModel):
    context: str = "."
    dockerfile: str = "Dockerfile"
    args: dict[str, str] = Field(default_factory=dict)
    target: str | None = None


class ImageBuild(StrictModel):
    build: BuildSpec


ENGINE_IMAGE = "@engine"  # the Sluice engine image itself (SLUICE_ENGINE_IMAGE; the Action's own)


def _image_name(value: str) -> str:
    if value.startswith("@") and value != ENGINE_IMAGE:
        raise ValueError(
            f"{value!r} is not an image: the only name starting with '@' is {ENGINE_IMAGE!r} "
            "(the Sluice engine image)"
        )
    return value


def _approval_text(value: str) -> str:
    if not value.strip().startswith("${{"):
        raise ValueError(
            f"expected true, false or '${{{{ params.<name> }}}}' (a boolean param), got {value!r}"
        )
    return value  # which param, and its type, are checked with the params (checks.py)


ImageRef = Annotated[str, Field(min_length=1), AfterValidator(_image_name)] | ImageBuild
EnvValue = str | int | float | bool
# A GitHub runner label (`ubuntu-latest`, `self-hosted`, `gpu`) and environment name: plain
# text, never an expression (the generated workflow writes them as they are).
RunnerLabel = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:/+-][A-Za-z0-9_.:/+ -]{0,99}$")]
EnvironmentName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-][A-Za-z0-9_. -]{0,254}$")]


def _labels(value: object) -> object:
    return [value] if isinstance(value, str) else value


RunnerLabels = Annotated[
    list[RunnerLabel],
    BeforeValidator(_labels, json_schema_input_type=RunnerLabel | list[RunnerLabel]),
    Field(min_length=1, max_length=10),
]


class StepFields(StrictModel):
    """Fields a step and `defaults` share; every one optional so `defaults` can omit it."""

    type: StepType | None = None
    image: ImageRef | None = None
    run: str | None = None
    command: list[str] | None = None
    config: dict[str, Any] | None = None
    env: dict[EnvName, EnvValue] | None = None
    secrets: list[SecretName] | None = None
    timeout: Duration | None = None
    retries: Retries | None = None
    when: str | None = None
    approval: bool | Annotated[str, AfterValidator(_approval_text)] | None = None
    resources: Resources | None = None
    network: Literal["none", "bridge", "host"] | None = None
    capabilities: list[Capability] | None = None
    cache: bool | None = None
    workspace: bool | list[str] | None = None
    # jobs mode (docs/scaling.md): the runner labels of the step's job, and the GitHub
    # environment it runs in (its required reviewers gate an approval step)
    runs_on: RunnerLabels | None = None
    environment: EnvironmentName | None = None


class Defaults(StepFields):
    """`defaults:`: any step field, applied where a step leaves it out."""


# Fan-out (docs/pipeline-format.md, "Fan-out"): one step run once per set of values.
MatrixValue = Annotated[
    bool | int | float | Annotated[str, Field(max_length=1000)],
    Field(description="a matrix value: text, a number or a boolean"),
]
# An axis: a literal list, or exactly `${{ params.x }}` naming a list param.
MatrixAxis = list[MatrixValue] | Annotated[str, Field(pattern=r"^\s*\$\{\{.*\}\}\s*$")]
MatrixEntry = dict[str, MatrixValue]


class Matrix(BaseModel):
    """`matrix:`: axes (name -> list of values) multiplied out, then `exclude` and `include`
    as in a GitHub workflow's `strategy.matrix`. Keys are checked in engine.core.fanout."""

    model_config = ConfigDict(extra="allow", frozen=True)
    __pydantic_extra__: dict[str, MatrixAxis] = Field(init=False)

    include: list[MatrixEntry] = Field(default_factory=list)
    exclude: list[MatrixEntry] = Field(default_factory=list)

    @property
    def axes(self) -> dict[str, list[Any] | str]:
        """Axis name -> its values (or the `${{ params.x }}` text naming them), in order."""
        return dict(self.__pydantic_extra__ or {})


Foreach = (
    list[MatrixValue] | list[MatrixEntry] | Annotated[str, Field(pattern=r"^\s*\$\{\{.*\}\}\s*$")]
)


def _allow_failures(value: object) -> int | float:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    if isinstance(value, float) and 0 < value < 1:
        return value
    raise ValueError(
        "allow_failures is a whole number of instances (e.g. 2) or a fraction of them "
        f"between 0 and 1 (e.g. 0.25), got {value!r}"
    )


AllowFailures = Annotated[
    int | float,
    BeforeValidator(_allow_failures),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0},
                {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
            ]
        }
    ),
]


class FanOut(StrictModel):
    """What makes a step fan out, and how its instances are run and judged."""

    matrix: Matrix | None = None
    foreach: Foreach | None = None
    max_parallel: Annotated[int, Field(ge=1, le=256)] | None = None
    fail_fast: bool = False
    allow_failures: AllowFailures = 0


class Step(StepFields):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    # `needs: prepare` is short for `needs: [prepare]`, as in a GitHub workflow
    needs: Annotated[
        list[str], BeforeValidator(_labels, json_schema_input_type=str | list[str])
    ] = Field(default_factory=list)
    matrix: Matrix | None = None
    foreach: Foreach | None = None
    max_parallel: Annotated[int, Field(ge=1, le=256)] | None = None
    fail_fast: bool | None = None
    allow_failures: AllowFailures | None = None

    @model_validator(mode="after")
    def _run_or_command(self) -> Step:
        if self.run is not None and self.command is not None:
            raise ValueError("give either run (a shell string) or command (exec form), not both")
        if self.matrix is not None and self.foreach is not None:
            raise ValueError("give either matrix or foreach, not both")
        return self

    @property
    def fanout(self) -> FanOut | None:
        """How the step fans out; None for a step without matrix or foreach."""
        if self.matrix is None and self.foreach is None:
            return None
        return FanOut(
            matrix=self.matrix,
            foreach=self.foreach,
            max_parallel=self.max_parallel,
            fail_fast=bool(self.fail_fast),
            allow_failures=self.allow_failures or 0,
        )


class Baseline(StrictModel):
    step: str


# `metrics:` says which way a metric is better (`sluice diff`, `report`, the PR comment mark
# deltas by it): `roc_auc` for any step's metric of that name, `evaluate.roc_auc` for one step's.
METRIC_KEY_PATTERN = r"^([a-z0-9][a-z0-9-]{0,62}\.)?[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$"


def _metric_key(value: str) -> str:
    if not re.match(METRIC_KEY_PATTERN, value):
        raise ValueError(
            f"invalid metric key {value!r}: METRIC (letters, digits, '_', '.', '-'), or "
            "STEP.METRIC for one step's, e.g. roc_auc or evaluate.roc_auc"
        )
    return value


MetricKey = Annotated[
    str,
    AfterValidator(_metric_key),
    WithJsonSchema({"type": "string", "pattern": METRIC_KEY_PATTERN}),
]


class Pipeline(StrictModel):
    name: Annotated[str, Field(pattern=NAME_PATTERN)]
    description: str = ""
    triggers: list[Trigger] = Field(default_factory=list)
    params: dict[ParamName, ParamValue] = Field(default_factory=dict)
    baseline: Baseline | None = None
    metrics: dict[MetricKey, Literal["higher", "lower"]] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    steps: Annotated[list[Step], Field(min_length=1)]
    finally_: list[Step] = Field(default_factory=list, alias="finally")

    @property
    def all_steps(self) -> list[Step]:
        return [*self.steps, *self.finally_]


class ResolvedStep(BaseModel):
    """A step with `defaults` and engine defaults applied: what the executor runs."""

    model_config = ConfigDict(frozen=True)

    name: str
    is_finally: bool
    type: StepType
    image: str | ImageBuild
    run: str | None
    command: list[str] | None
    needs: list[str]
    config: dict[str, Any]
    env: dict[str, str]
    secrets: list[str]
    timeout: float
    retries: RetryPolicy
    when: str | None
    approval: bool | str  # str: `${{ params.x }}`, decided when the run's params are known
    resources: Resources
    network: Literal["none", "bridge", "host"]
    capabilities: list[str]  # all the container keeps: DEFAULT_CAPABILITIES and the step's own
    cache: bool
    workspace: bool | list[str]
    runs_on: list[str] = []  # jobs mode: the job's runner labels ([]: the workflow's default)
    environment: str | None = None  # jobs mode: the job's GitHub environment
    # Fan-out (engine.core.fanout): the template step as loaded, and the group step of a
    # run, carry `fanout`; a group names its `instances`; an instance its group and values.
    fanout: FanOut | None = None
    instance_of: str | None = None
    matrix: dict[str, Any] = {}
    instances: tuple[str, ...] = ()

    @property
    def is_group(self) -> bool:
        """A fanned-out step in a run: settled from its instances, never run itself."""
        return bool(self.instances)

    @property
    def argv(self) -> list[str] | None:
        """The container command: `sh -c RUN`, the exec form, or None for the image's own."""
        if self.run is not None:
            return ["sh", "-c", self.run]
        return self.command


def _env_text(value: EnvValue) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


_NO_RETRIES = RetryPolicy()  # frozen models: one shared instance is safe
_NO_LIMITS = Resources()


class StepWithoutImage(ValueError):
    """A step that names no image, neither itself nor through `defaults`."""

    def __init__(self, step: str) -> None:
        super().__init__(f"step {step!r} has no image: set image on the step or in defaults")
        self.step = step


def resolve_step(step: Step, defaults: Defaults, *, is_finally: bool) -> ResolvedStep:
    """Apply `defaults` then the engine's defaults to one step.

    `env` and `config` merge (the step wins per key); `secrets` are the union.
    Raises StepWithoutImage (a ValueError) when no image is given anywhere.
    """

    def pick(field: str) -> Any:
        own = getattr(step, field)
        return own if own is not None else getattr(defaults, field)

    # run and command are one choice: a step's own command is not overridden by defaults.run
    own_argv = step.run is not None or step.command is not None
    run = step.run if own_argv else defaults.run
    command = step.command if own_argv else defaults.command
    image = pick("image")
    if image is None:
        raise StepWithoutImage(step.name)
    step_type = pick("type") or StepType.custom
    cache = pick("cache")
    env = {**(defaults.env or {}), **(step.env or {})}
    secrets = list(dict.fromkeys([*(defaults.secrets or []), *(step.secrets or [])]))
    # The parts were validated already; construct without validating them a second time.
    return ResolvedStep.model_construct(
        name=step.name,
        is_finally=is_finally,
        type=step_type,
        image=image,
        run=run,
        command=command,
        needs=list(step.needs),
        config={**(defaults.config or {}), **(step.config or {})},
        env={k: _env_text(v) for k, v in env.items()},
        secrets=secrets,
        timeout=pick("timeout") or DEFAULT_TIMEOUT_S,
        retries=pick("retries") or _NO_RETRIES,
        when=pick("when"),
        approval=pick("approval") or False,
        resources=pick("resources") or _NO_LIMITS,
        network=pick("network") or "none",
        capabilities=sorted({*DEFAULT_CAPABILITIES, *(pick("capabilities") or [])}),
        cache=cache if cache is not None else step_type != StepType.deployment,
        workspace=pick("workspace") if pick("workspace") is not None else True,
        runs_on=list(pick("runs_on") or []),
        environment=pick("environment"),
        fanout=step.fanout,
        instance_of=None,
        matrix={},
        instances=(),
    )


def resolve_steps(pipeline: Pipeline) -> list[ResolvedStep]:
    """Every step of the pipeline (main steps, then `finally`), defaults applied."""
    main = [resolve_step(s, pipeline.defaults, is_finally=False) for s in pipeline.steps]
    fin = [resolve_step(s, pipeline.defaults, is_finally=True) for s in pipeline.finally_]
    return main + fin
