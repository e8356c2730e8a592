"""A step made concrete for one run: its image (pulled or built), argv, config, env, cache key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.core import cache, fingerprint, templating
from engine.core.manifest import RunManifest
from engine.core.spec import ENGINE_IMAGE, ImageBuild, ResolvedStep
from engine.local.workspace import WorkspaceSnapshot
from engine.ports import BuildRequest, ContainerRuntime, ImageMissing


@dataclass(frozen=True)
class Prepared:
    """A step made concrete for this run (computed once, before its first attempt)."""

    step: ResolvedStep
    image_id: str | None  # None: `error` says why the image is missing
    argv: list[str] | None
    config: Any
    env: dict[str, str]  # the step's env, resolved; secrets are added per attempt
    components: dict[str, Any] = field(default_factory=dict)
    key: str | None = None
    error: str | None = None


def _step_view(manifest: RunManifest) -> dict[str, Any]:
    """Each step's status and metrics; a fan-out group's also lists its instances (the
    entries of its fan-in index, engine.core.fanout.index), for `when` and aggregates."""
    view: dict[str, Any] = {}
    for name, rec in manifest.steps.items():
        view[name] = {"status": rec.status.value, "metrics": dict(rec.metrics)}
        if rec.instances:
            view[name]["instances"] = [
                {
                    "name": instance,
                    "matrix": dict(manifest.steps[instance].matrix or {}),
                    "status": manifest.steps[instance].status.value,
                    "metrics": dict(manifest.steps[instance].metrics),
                }
                for instance in rec.instances
                if instance in manifest.steps
            ]
    return view


def expression_context(manifest: RunManifest, baseline: RunManifest | None) -> dict[str, Any]:
    """What `when` expressions and `${{ }}` see: params, steps, baseline, trigger."""
    trigger = manifest.trigger
    return {
        "params": manifest.params,
        "steps": _step_view(manifest),
        "baseline": {"steps": _step_view(baseline)} if baseline else None,
        # The payload sits under its own key: an untrusted payload cannot pose as `kind`.
        "trigger": {
            "kind": trigger.kind,
            "event": trigger.event,
            "scheduled_for": trigger.scheduled_for,
            "payload": trigger.payload,
        },
    }


def decide_approval(step: ResolvedStep, params: Mapping[str, Any]) -> ResolvedStep:
    """`approval: "${{ params.x }}"` made true or false by this run's params."""
    if isinstance(step.approval, bool):
        return step
    value = templating.substitute(step.approval, params, {})
    return step.model_copy(update={"approval": value is True})


class Preparer:
    """Prepares each step of one run once (retries reuse it), each image once per reference.

    An image that cannot be had makes a Prepared with `error`; a runtime that does not
    answer raises (EngineUnavailable), which stops the run.
    """

    def __init__(
        self,
        runtime: ContainerRuntime,
        repo: Path,
        workspace: WorkspaceSnapshot,
        engine_image: str | None,
    ) -> None:
        self.runtime, self.repo, self.workspace = runtime, repo, workspace
        self.engine_image = engine_image
        self._images: dict[str, str] = {}
        self._built: dict[str, str] = {}  # a build's settings -> the tag it was built as
        self._prepared: dict[str, Prepared] = {}

    def get(self, name: str) -> Prepared | None:
        """The step as prepared already, if it was."""
        return self._prepared.get(name)

    def built_tag(self, image: ImageBuild) -> str | None:
        """The tag a step's `build` image was built as (None until it was)."""
        return self._built.get(image.model_dump_json())

    def prepare(
        self,
        step: ResolvedStep,
        params: Mapping[str, Any],
        trigger: Mapping[str, Any],
        inputs: Mapping[str, Mapping[str, str]],
    ) -> Prepared:
        """`step` made concrete; `inputs`: each needed step's output path -> sha256."""
        if step.name in self._prepared:
            return self._prepared[step.name]
        config = templating.substitute(step.config, params, trigger)
        env = {k: templating.substitute_text(v, params, trigger) for k, v in step.env.items()}
        argv = step.argv
        if step.command is not None:
            argv = [templating.substitute_text(item, params, trigger) for item in step.command]
        try:
            image_id: str | None = self._image_id(step)
            error = None
        except ImageMissing as exc:
            image_id, error = None, str(exc)
        parts: dict[str, Any] = {}
        key = None
        if image_id is not None:
            parts = cache.components(
                image_id=image_id,
                argv=argv,
                config=config,
                env=env,
                secret_names=step.secrets,
                inputs=inputs,
                workspace=self.workspace.files_for(step.workspace),
                matrix=step.matrix if step.instance_of else None,
            )
            key = cache.key(parts)
        prepared = Prepared(step, image_id, argv, config, env, parts, key, error)
        self._prepared[step.name] = prepared
        return prepared

    def _image_id(self, step: ResolvedStep) -> str:
        key = step.image if isinstance(step.image, str) else step.image.model_dump_json()
        if key not in self._images:
            if isinstance(step.image, ImageBuild):
                self._images[key] = self._build(step.image)
            elif step.image == ENGINE_IMAGE:
                if not self.engine_image:
                    raise ImageMissing(
                        f'step {step.name!r} runs in image "{ENGINE_IMAGE}" (the Sluice engine '
                        "image), and none is known: set SLUICE_ENGINE_IMAGE to an image with "
                        "sluice installed, or run the step in any Python image with sluice "
                        'installed (docs/drift.md, "Without the engine image"); the Action '
                        "sets it itself"
                    )
                self._images[key] = self.runtime.image_id(self.engine_image)
            else:
                self._images[key] = self.runtime.image_id(step.image)
        return self._images[key]

    def _build(self, image: ImageBuild) -> str:
        build = image.build
        root = self.repo.resolve()
        context = (self.repo / build.context).resolve()
        if not context.is_relative_to(root) or not context.is_dir():
            raise ImageMissing(
                f"build context {build.context!r} is not a folder inside the repository"
            )
        prefix = context.relative_to(root).as_posix()
        files = {
            k: v
            for k, v in self.workspace.digests.items()
            if prefix in ("", ".") or k == prefix or k.startswith(prefix + "/")
        }
        digest = fingerprint.digest({"files": files, "build": build.model_dump(mode="json")})
        # Named after the context and tagged by its content: pipelines sharing it build once.
        name = "-".join(p for p in prefix.lower().replace("_", "-").split("/") if p and p != ".")
        tag = f"sluice-build/{name or 'root'}:{digest[:16]}"
        self._built[image.model_dump_json()] = tag
        return self.runtime.build_image(
            BuildRequest(context, build.dockerfile, tag, dict(build.args), build.target)
        )
