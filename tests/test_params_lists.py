"""List params (issue 18): declared, given as text or JSON from every source, offered as
workflow_dispatch inputs of their own, and seen by steps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import S3Server, make_repo, sluice
from ghemu import Evaluator, Options, WorkflowRun, load
from ghemu.api import GitHubApi
from test_jobs_mode_e2e import project, sluice_run_id

from engine.adapters.artifacts import DEFAULT_URL, ArtifactStore
from engine.adapters.fake_runtime import FakeOutcome, FakeRuntime
from engine.app import runs
from engine.app.pipelines import schema
from engine.app.webhooks import read_hook
from engine.core.gh_workflow import MAX_DISPATCH_INPUTS, list_inputs
from engine.core.manifest import Trigger
from engine.core.params import coerce_param, coerce_params, list_text, split_list
from engine.core.parse import load_text
from engine.core.triggers.github import PlannedRun, plan
from engine.errors import InvalidInput, PipelineInvalid
from engine.ports import ContainerSpec
from engine.run.executor import Executor, RunOptions

EVENTS = Path(__file__).parent / "events"
DECLARED: dict[str, Any] = {
    "regions": ["eu", "us"],
    "shards": [1, 2],
    "rates": [0.1, 0.5],
    "flags": [True],
    "tags": [],
}

SWEEP = """
name: sweep
params:
  regions: [eu, us]
  shards: [1, 2]
  n: 3
steps:
  - name: show
    image: {image}
    config: {{regions: "${{{{ params.regions }}}}", shards: "${{{{ params.shards }}}}"}}
    env: {{REGIONS: "${{{{ params.regions }}}}"}}
    command: ["sh", "-c", "cat /sluice/config.json; echo; echo \\"env=$REGIONS\\"", "--regions=${{{{ params.regions }}}}"]
"""


def text(source: str, **given: str) -> dict[str, Any]:
    return coerce_params(DECLARED, given, source=source, from_text=True)


def as_json(source: str, **given: Any) -> dict[str, Any]:
    return coerce_params(DECLARED, given, source=source, from_text=False)


def refused(call: Any, *args: Any, **kwargs: Any) -> str:
    with pytest.raises(InvalidInput) as caught:
        call(*args, **kwargs)
    return str(caught.value)


# --- coercion ------------------------------------------------------------------------------


def test_text_is_comma_separated_or_a_json_array_and_items_take_the_item_type() -> None:
    assert text("-p", regions=" eu, us ,,apac ")["regions"] == ["eu", "us", "apac"]
    assert text("-p", regions='["a,b", " c "]')["regions"] == ["a,b", " c "]
    assert text("-p", shards="3, -4")["shards"] == [3, -4]
    assert text("-p", shards="[5]")["shards"] == [5]
    assert text("-p", rates="1, 2.5")["rates"] == [1.0, 2.5]
    assert all(type(x) is float for x in text("-p", rates="1,2")["rates"])
    assert text("-p", flags="yes,false,0")["flags"] == [True, False, False]
    assert text("-p", tags="x,y")["tags"] == ["x", "y"]  # an empty default: items are text
    assert text("-p", regions="eu")["regions"] == ["eu"]
    assert text("-p", regions="")["regions"] == []  # the fan-out reports an empty expansion
    assert text("-p", regions="[]")["regions"] == []
    assert text("-p", regions="eu,us") == {**DECLARED, "regions": ["eu", "us"]}


def test_json_takes_a_list_of_matching_scalars() -> None:
    given = as_json("--params-json", regions=["x"], shards=[7], rates=[1, 0.5], tags=[])
    assert given == {**DECLARED, "regions": ["x"], "shards": [7], "rates": [1.0, 0.5]}
    assert type(given["rates"][0]) is float


@pytest.mark.parametrize(
    ("given", "from_text", "expected"),
    [
        ("1,x", True, "got '1,x': item 2, 'x', is not a whole number"),
        ("[1, 2.5]", True, "got '[1, 2.5]': item 2, 2.5, is not a whole number"),
        ("[1, [2]]", True, "item 2 is a list; items are text, numbers or booleans"),
        ('[1, {"a": 2}]', True, "item 2 is a mapping"),
        ("[1, null]", True, "item 2 is null"),
        ("[1, 2", True, "not a JSON array"),
        ('{"a": 1}', True, "item 1, '{\"a\": 1}', is not a whole number"),
        ("1,2", False, "got '1,2'"),  # JSON sources take a JSON list, not text
        (3, False, "got 3"),
        ([1, True], False, "item 2, true, is not a whole number"),
        ([1, "2"], False, "item 2, '2', is not a whole number"),
        ([[1]], False, "item 1 is a list"),
    ],
)
def test_refusals_name_the_source_the_param_and_what_it_takes(
    given: Any, from_text: bool, expected: str
) -> None:
    message = refused(
        coerce_params, DECLARED, {"shards": given}, source="the source", from_text=from_text
    )
    assert message.startswith(
        "the source: param 'shards' takes a list of whole numbers (its default is [1, 2]), got "
    )
    assert expected in message
    forms = "comma-separated or a JSON array, e.g. 1,2 or [1, 2]"
    assert (forms if from_text else "as a JSON list, e.g. [1, 2]") in message


def test_more_than_256_items_are_refused_with_the_limit() -> None:
    assert len(text("-p", shards=",".join(["1"] * 256))["shards"]) == 256
    message = refused(text, "workflow_dispatch inputs", shards=",".join(["1"] * 257))
    assert "257 items, over the limit of 256" in message
    assert len(message.splitlines()[0]) < 400  # the value shown is cut short
    assert "257 items" in refused(as_json, "client_payload.params", shards=[1] * 257)


def test_scalar_params_keep_their_messages() -> None:
    declared = {"n": 100, "fast": False}
    message = refused(coerce_param, "n", 100, "many", from_text=True, source="-p")
    assert message == "-p: param 'n' takes a whole number (its default is 100), got 'many'"
    assert coerce_params(declared, {"fast": "yes"}, source="-p", from_text=True)["fast"] is True


@pytest.mark.parametrize(
    "values",
    [
        ["eu", "us"],
        [1, 2],
        [0.1, 1.0, 1e-05],
        [True, False],
        [],
        ["a, b", "c"],
        [" a"],
        [""],
        ["[x]", "y"],
        ["x", "[y]"],
        ["true", "1"],
        ["ünï", "日本"],
    ],
)
def test_list_text_reads_back_as_the_same_list(values: list[Any]) -> None:
    shown = list_text(values)
    default = values or ["text"]
    assert coerce_param("p", default, shown, from_text=True, source="-p") == values
    items, _ = split_list(shown)
    assert len(items) == len(values)


def test_list_text_is_comma_separated_only_when_every_item_is_plain() -> None:
    assert list_text(["eu", "us"]) == "eu,us"
    assert list_text([1, 0.5, True]) == "1,0.5,true"
    assert list_text(["a, b"]) == '["a, b"]'
    assert list_text([" a"]) == '[" a"]'
    assert list_text(["[a]"]) == '["[a]"]'
    assert list_text([]) == "[]"


# --- declaring ---------------------------------------------------------------------------


def loaded_params(params: str) -> dict[str, Any]:
    text = f"name: p\nparams:\n{params}\nsteps:\n  - {{name: a, image: img, run: 'true'}}\n"
    return dict(load_text(text, "pipelines/p.yaml").pipeline.params)


def test_a_list_default_is_scalars_of_one_type() -> None:
    assert loaded_params("  regions: [eu, us]\n  n: 3") == {"regions": ["eu", "us"], "n": 3}
    assert loaded_params("  rates: [1, 0.5]") == {"rates": [1.0, 0.5]}
    assert loaded_params("  none: []") == {"none": []}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("[[1], 2]", "item 1 is a list"),
        ("[{a: 1}]", "item 1 is a mapping"),
        ("[eu, ~]", "item 2 is null"),
        ("[eu, 1]", "mixes text and whole numbers; quote the others to make them all text"),
        ("[true, 1]", "mixes booleans and whole numbers"),
        ("[" + ", ".join(["1"] * 257) + "]", "at most 256 items; this one has 257"),
    ],
)
def test_a_bad_list_default_is_a_problem_at_its_line_naming_the_param(
    value: str, expected: str
) -> None:
    with pytest.raises(PipelineInvalid) as caught:
        loaded_params(f"  n: 1\n  regions: {value}")
    assert "pipelines/p.yaml:4: params.regions: " in str(caught.value)
    assert expected in str(caught.value)


def test_the_schema_takes_a_list_of_at_most_256_scalars() -> None:
    params = schema()["properties"]["params"]["additionalProperties"]
    lists = [form for form in params["anyOf"] if form.get("type") == "array"]
    assert len(lists) == 1 and lists[0]["maxItems"] == 256
    assert {item["type"] for item in lists[0]["items"]["anyOf"]} == {
        "boolean",
        "integer",
        "number",
        "string",
    }


# --- runs: -p and --params-json, and what a step sees ----------------------------------------


def test_run_params_from_p_and_params_json() -> None:
    loaded = load_text(textwrap.dedent(SWEEP.format(image="img")), "pipelines/sweep.yaml")
    given = runs.params(loaded, ("regions=a,b", "shards=[3]"), None)
    assert given == {"regions": ["a", "b"], "shards": [3], "n": 3}
    given = runs.params(loaded, ("n=4",), '{"regions": ["x", "y"]}')
    assert given == {"regions": ["x", "y"], "shards": [1, 2], "n": 4}


def test_a_cli_run_refuses_a_bad_list_before_anything_runs(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"sweep.yaml": SWEEP.format(image="img")})
    done = sluice("run", "sweep", "-p", "shards=1,two", repo=repo)
    assert done.returncode == 2, done.stderr
    assert "-p: param 'shards' takes a list of whole numbers" in done.stderr
    assert "item 2, 'two', is not a whole number" in done.stderr
    assert "Traceback" not in done.stderr
    done = sluice("run", "sweep", "--params-json", '{"regions": "a,b"}', repo=repo)
    assert done.returncode == 2
    assert "--params-json: param 'regions' takes a list of text" in done.stderr


def test_a_step_sees_the_list_in_config_and_as_json_text_in_env_and_command(
    tmp_path: Path,
) -> None:
    repo = make_repo(tmp_path)
    loaded = load_text(textwrap.dedent(SWEEP.format(image="img")), "pipelines/sweep.yaml")
    seen: dict[str, Any] = {}

    def script(spec: ContainerSpec, attempt: int, files: dict[str, bytes]) -> FakeOutcome:
        seen["spec"], seen["files"] = spec, files
        return FakeOutcome()

    options = RunOptions(
        params=runs.params(loaded, ("regions=eu,us,apac",), None),
        trigger=Trigger(kind="manual"),
        max_parallel=1,
        artifacts=ArtifactStore(DEFAULT_URL, repo),
    )
    manifest = Executor(loaded, FakeRuntime({"show": script}), repo=repo, options=options).run()
    assert manifest.status.value == "succeeded"
    config = json.loads(seen["files"]["/sluice/config.json"])
    assert config == {"regions": ["eu", "us", "apac"], "shards": [1, 2]}
    assert json.loads(seen["files"]["/sluice/params.json"])["regions"] == ["eu", "us", "apac"]
    assert json.loads(seen["spec"].env["REGIONS"]) == ["eu", "us", "apac"]
    assert seen["spec"].command[-1] == '--regions=["eu", "us", "apac"]'
    assert manifest.params["regions"] == ["eu", "us", "apac"]


@pytest.mark.docker
def test_sluice_run_with_a_list_param_reaches_the_steps_config(
    tmp_path: Path, busybox_image: str
) -> None:
    repo = make_repo(tmp_path, {"sweep.yaml": SWEEP.format(image=busybox_image)})
    done = sluice("run", "sweep", "-p", "regions=a, b", "--json", repo=repo, process=True)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["params"]["regions"] == ["a", "b"]
    logged = [
        line[len("[show] ") :] for line in done.stderr.splitlines() if line.startswith("[show] ")
    ]
    config = "\n".join(logged[: logged.index('env=["a", "b"]')])
    assert json.loads(config) == {"regions": ["a", "b"], "shards": [1, 2]}, done.stderr
    assert '[show] env=["a", "b"]' in done.stderr


# --- events --------------------------------------------------------------------------------


def sweep_loaded() -> Any:
    return load_text(textwrap.dedent(SWEEP.format(image="img")), "pipelines/sweep.yaml")


def dispatch(**inputs: Any) -> list[PlannedRun]:
    payload = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    payload["inputs"] = {"pipeline": "sweep", "params": "{}", **inputs}
    planned = plan("workflow_dispatch", payload, [sweep_loaded()], changed_files=None)
    assert isinstance(planned, list)
    return planned


def test_a_workflow_dispatch_input_of_its_own_gives_the_list() -> None:
    [run] = dispatch(regions="eu,us,apac")
    assert run.params == {"regions": ["eu", "us", "apac"], "shards": [1, 2], "n": 3}
    [run] = dispatch(regions='["eu"]', shards="3,4")
    assert run.params == {"regions": ["eu"], "shards": [3, 4], "n": 3}
    [run] = dispatch(regions="[]")
    assert run.params["regions"] == []


def test_an_input_left_empty_or_at_its_default_leaves_params_to_decide() -> None:
    [run] = dispatch(regions="", shards="1,2", params='{"regions": ["x"], "shards": [9]}')
    assert run.params == {"regions": ["x"], "shards": [9], "n": 3}
    [run] = dispatch(regions=" eu , us ")  # the same list, written differently
    assert run.params["regions"] == ["eu", "us"]


def test_an_input_and_params_both_changing_a_list_is_refused() -> None:
    message = refused(dispatch, regions="apac", params='{"regions": ["x"]}')
    assert "param 'regions' is given twice, by the input regions and in the input params" in message


def test_a_bad_input_names_the_input() -> None:
    message = refused(dispatch, shards="1,x")
    assert message.startswith(
        "workflow_dispatch input shards: param 'shards' takes a list of whole numbers"
    )
    # in the params input, a list is JSON
    message = refused(dispatch, params='{"regions": "eu,us"}')
    assert message.startswith(
        "workflow_dispatch input params: param 'regions' takes a list of text (its default is "
        '["eu", "us"]), got \'eu,us\''
    )


def test_client_payload_params_take_json_lists() -> None:
    payload = json.loads((EVENTS / "repository_dispatch.json").read_text())
    payload["action"] = "sluice-run"
    payload["client_payload"] = {"pipeline": "sweep", "params": {"regions": ["eu", "apac"]}}
    [run] = plan("repository_dispatch", payload, [sweep_loaded()], changed_files=None)
    assert run.params["regions"] == ["eu", "apac"]
    payload["client_payload"]["params"] = {"regions": [["eu"]]}
    message = refused(plan, "repository_dispatch", payload, [sweep_loaded()], changed_files=None)
    assert "client_payload.params: param 'regions' takes a list of text" in message
    assert "item 1 is a list" in message


def test_a_served_webhooks_params_take_json_lists() -> None:
    hooked = load_text(
        textwrap.dedent(SWEEP.format(image="img")).replace(
            "name: sweep\n", "name: sweep\ntriggers: [{webhook: {event: score}}]\n"
        ),
        "pipelines/sweep.yaml",
    )
    [params], _ = read_hook("score", b'{"params": {"shards": [4, 5]}}', [hooked])
    assert params["shards"] == [4, 5]
    message = refused(read_hook, "score", b'{"params": {"shards": "4,5"}}', [hooked])
    assert message.startswith("params of sweep: param 'shards' takes a list of whole numbers")


# --- the generated workflow ------------------------------------------------------------------


def inputs_of(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    result: dict[str, Any] = data[True]["workflow_dispatch"]["inputs"]
    return result


OTHER = """
name: other
params: {regions: [eu, us], labels: ["a, b", c], shards: "not a list", params: [x]}
steps:
  - {name: a, image: img, run: "true"}
"""


def test_the_workflow_offers_each_list_param_as_a_text_input(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"sweep.yaml": SWEEP.format(image="img"), "other.yaml": OTHER})
    done = sluice("workflow", "generate", repo=repo)
    assert done.returncode == 0, done.stderr
    inputs = inputs_of(repo / ".github" / "workflows" / "sluice.yml")
    assert list(inputs) == ["pipeline", "params", "labels", "regions", "shards"]
    assert inputs["regions"] == {
        "description": "Param regions of other, sweep: a list, comma-separated or a JSON array",
        "required": False,
        "type": "string",
        "default": "eu,us",
    }
    assert inputs["labels"]["default"] == '["a, b", "c"]'
    assert inputs["shards"]["default"] == "1,2"  # sweep's; other's `shards` is no list
    assert inputs["params"]["description"].startswith(
        "Params as a JSON object"
    )  # not `params: [x]`

    # as GitHub sends them: every input, at its default unless changed
    payload = json.loads((EVENTS / "workflow_dispatch.json").read_text())
    payload["inputs"] = {name: spec.get("default", "") for name, spec in inputs.items()}
    pipelines = [sweep_loaded(), load_text(textwrap.dedent(OTHER), "pipelines/other.yaml")]
    for name in ("sweep", "other"):
        payload["inputs"]["pipeline"] = name
        [run] = plan("workflow_dispatch", payload, pipelines, changed_files=None)
        assert run.params == dict(pipelines[name == "other"].pipeline.params)
    payload["inputs"]["shards"] = "5"
    payload["inputs"]["pipeline"] = "other"
    [run] = plan("workflow_dispatch", payload, pipelines, changed_files=None)
    assert run.params["shards"] == "not a list"  # the input is sweep's


def test_jobs_mode_workflows_offer_their_own_pipelines_lists(tmp_path: Path) -> None:
    repo = make_repo(tmp_path, {"sweep.yaml": SWEEP.format(image="img"), "other.yaml": OTHER})
    done = sluice("workflow", "generate", "--jobs", repo=repo)
    assert done.returncode == 0, done.stderr
    made = {p.name: inputs_of(p) for p in (repo / ".github" / "workflows").glob("*.yml")}
    [sweep] = [inputs for name, inputs in made.items() if "sweep" in name]
    assert list(sweep) == ["params", "regions", "shards"]
    assert sweep["regions"]["description"] == (
        "Param regions of sweep: a list, comma-separated or a JSON array"
    )


def test_disagreeing_defaults_give_an_empty_default_and_names_share_no_input() -> None:
    lists = {
        "regions": [("a", ["eu"]), ("b", ["us"])],
        "Zones": [("a", ["x"])],
        "zones": [("b", ["y"])],
        "Pipeline": [("a", ["p"])],
    }
    made = list_inputs(lists, MAX_DISPATCH_INPUTS - 2)
    assert list(made) == ["regions"]
    assert made["regions"]["default"] == ""
    assert made["regions"]["description"].endswith("(empty: the pipeline's default)")
    many = {f"p{i:02}": [("a", [i])] for i in range(20)}
    assert list(list_inputs(many, MAX_DISPATCH_INPUTS - 2)) == [f"p{i:02}" for i in range(8)]


# --- the generated workflow, run the way GitHub runs it (tests/ghemu) ------------------------

LISTED = """\
name: listed
params: {{regions: [eu, us]}}
defaults: {{image: "{image}"}}
steps:
  - name: show
    config: {{regions: "${{{{ params.regions }}}}"}}
    run: cp /sluice/config.json /sluice/outputs/config.json
"""


@pytest.mark.docker
@pytest.mark.slow
def test_a_list_typed_into_the_run_form_reaches_the_run(
    tmp_path: Path,
    s3_server: S3Server,
    published_engine_image: str,
    gh_evaluator: Evaluator,
    gh_api: GitHubApi,
    busybox_image: str,
) -> None:
    jobs = project(tmp_path, LISTED, s3_server, published_engine_image, gh_evaluator, gh_api)
    inputs = inputs_of(jobs.workflow_file)
    assert inputs["regions"]["default"] == "eu,us"
    options = Options(
        origin=jobs.origin,
        work=jobs.root / "runners",
        event_name="workflow_dispatch",
        # as GitHub sends a dispatch from the run form: every input, as text
        event={"inputs": {"params": "{}", "regions": " eu, us ,apac"}, "ref": "refs/heads/main"},
        secrets={
            "AWS_ACCESS_KEY_ID": jobs.s3.env["AWS_ACCESS_KEY_ID"],
            "AWS_SECRET_ACCESS_KEY": jobs.s3.env["AWS_SECRET_ACCESS_KEY"],
        },
        api=jobs.api,
        grace=5,
        pools={"ubuntu-latest": 1},
    )
    record = WorkflowRun(load(jobs.workflow_file), jobs.evaluator, options).run(timeout=300)
    assert record.result == "success", record.describe()
    manifest = jobs.manifest(sluice_run_id(record))
    assert manifest["params"] == {"regions": ["eu", "us", "apac"]}
    assert manifest["trigger"]["kind"] == "workflow_dispatch"
    assert manifest["steps"]["show"]["status"] == "succeeded"
