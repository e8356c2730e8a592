"""ghemu: a GitHub Actions workflow emulator for the tests (test code, not product).

Runs a workflow file as GitHub does: jobs as their needs allow, `if:` and `${{ }}` by
GitHub's own evaluator (@actions/expressions), each job on a free runner of its `runs-on`
pool in a fresh clone of a bare origin, `actions/checkout`, `run:` steps, Docker actions
(`docker://IMAGE`, or `OWNER/REPO@REF` mapped to a local image) with the runner's mounts and
variables, environments gated by a reviewer, cancellation and timeout-minutes.

    run = WorkflowRun(workflow.load(path), evaluator, Options(origin=..., work=...))
    record = run.run()

Fixtures (tests/ghemu/fixtures.py; registered by tests/conftest.py):
`gh_evaluator`, `image_registry`, `published_engine_image`, `gh_api` (the approvals API the
engine asks who approved an environment; pass it as `Options(api=...)`).

A job with `strategy.matrix` runs as GitHub runs it (tests/ghemu/matrix.py): after its `if:`
(which cannot read `matrix`) the matrix is evaluated with `needs` etc. (a vector may be an
expression such as `fromJSON(needs.plan.outputs.x)`), expanded with include/exclude, and
each combination is a job of its own (its runner and fresh clone, its `matrix` and
`strategy` contexts, its name: `name:` evaluated, or `<name> (<values>)`), in order, at
most `max-parallel` at once; `fail-fast` (default true) cancels the others at the first
failure; an empty vector fails the job ("Error when evaluating 'strategy' ..."). The job's
record holds one record per combination (`JobRecord.instances`); its result for `needs`
is failure if a combination failed, else cancelled if one was, else success; its outputs:
the last combination to finish wins.

Faithful where the engine can tell, simplified elsewhere: no reusable workflows,
services or job containers, no `continue-on-error`; a matrix job's environment is reviewed
once per combination; `uses: OWNER/REPO@REF` only when mapped to a local image
(`Options.actions`, e.g. `MappedAction.from_action_yml(action.yml, image)`); `run:` steps run
as this process's user unless `Options.runner_uid`; a job over its timeout-minutes fails.
"""

from __future__ import annotations

from .emulator import (
    Decision,
    JobRecord,
    MappedAction,
    Options,
    RunRecord,
    StepRecord,
    WorkflowRun,
    max_overlap,
)
from .expressions import Evaluator, ExpressionError, Status
from .machine import docker_argv, input_variable, parse_file_commands
from .workflow import Job, Step, Workflow, WorkflowError, load, parse

__all__ = [
    "Decision",
    "Evaluator",
    "ExpressionError",
    "Job",
    "JobRecord",
    "MappedAction",
    "Options",
    "RunRecord",
    "Status",
    "Step",
    "StepRecord",
    "Workflow",
    "WorkflowError",
    "WorkflowRun",
    "docker_argv",
    "input_variable",
    "load",
    "max_overlap",
    "parse",
    "parse_file_commands",
]
