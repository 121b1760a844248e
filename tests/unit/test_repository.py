"""The committed model repository is exactly what the registry generates, and it is coherent."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ecomgen.registry import REGISTRY
from ecomgen.spec import BACKEND, DEADLINE, TARGETS, NetworkStep, PythonStep, wire
from ecomgen.specs.tryon import TRYON
from export.repository import DEFAULT_ROOT, check_repository, repository_models, write_repository


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def configs(target: str) -> dict[str, mc.ModelConfig]:
    return {m.name: m.config for m in repository_models(target)}


def test_committed_repository_is_up_to_date():
    problems = check_repository(DEFAULT_ROOT)
    assert not problems, "run `python -m export.repository`:\n" + "\n".join(problems)


def test_check_detects_a_hand_edit_a_stale_model_and_an_extra_file(tmp_path):
    write_repository(tmp_path, "cpu")
    cfg = tmp_path / "cpu" / "product_gan" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 64", "max_batch_size: 8"))
    (tmp_path / "cpu" / "old_model" / "1").mkdir(parents=True)
    (tmp_path / "cpu" / "old_model" / "config.pbtxt").write_text('name: "old_model"\n')
    (tmp_path / "cpu" / "tryon_pre" / "1" / "model.py").write_text("print('copied code')\n")
    (tmp_path / "cpu" / "product_gan" / "1" / "product_gan_generator.onnx").write_bytes(b"built")
    problems = check_repository(tmp_path, ["cpu"])
    assert any("max_batch_size: 8" in p for p in problems)
    assert any("old_model/: extra model directory" in p for p in problems)
    assert any("tryon_pre/1/model.py: extra file" in p for p in problems)
    assert not any(".onnx" in p for p in problems), "build outputs are not stale files"
    assert len(problems) == 4  # the config diff, the stale dir, its config, the copied code


def test_write_removes_models_dropped_from_the_registry(tmp_path):
    (tmp_path / "cpu" / "dropped" / "1").mkdir(parents=True)
    write_repository(tmp_path, "cpu")
    assert not (tmp_path / "cpu" / "dropped").exists()
    assert not check_repository(tmp_path, ["cpu"])


@pytest.mark.parametrize("target", TARGETS)
def test_configs_round_trip_and_hold_no_code(target):
    for model in repository_models(target):
        path = DEFAULT_ROOT / target / model.name / "config.pbtxt"
        assert parse(path) == model.config
        assert (path.parent / "1").is_dir()
    assert not list((DEFAULT_ROOT / target).rglob("*.py")), "serving code lives in the package"


@pytest.mark.parametrize("target", TARGETS)
def test_public_contract_is_the_same_on_every_target(target):
    """What a client reads back from the served config (Contract.from_config) is the contract: a
    batched ensemble carries its rows as an explicit first dim and says so in its parameters."""
    from google.protobuf import json_format

    from ecomgen_client.contracts import Contract

    cfgs = configs(target)
    for m in REGISTRY:
        c, cfg = m.contract, cfgs[m.name]
        read = Contract.from_config(json_format.MessageToDict(cfg, preserving_proto_field_name=True))
        assert read.max_batch_size == c.max_batch_size, m.name
        # (Outputs have no "optional" in Triton's schema: a client asks for the ones it wants.)
        assert [t.optional for t in read.inputs] == [t.optional for t in c.inputs], m.name
        for got, want in ((read.inputs, c.inputs), (read.outputs, c.outputs)):
            assert [(t.name, t.dtype, t.dims) for t in got] == [(t.name, t.dtype, t.dims) for t in want], (
                m.name
            )
            assert [(t.value_range, t.max_bytes) for t in got] == [(t.value_range, t.max_bytes) for t in want]
        if c.class_names:
            assert cfg.parameters["num_classes"].string_value == str(len(c.class_names))


@pytest.mark.parametrize("target", TARGETS)
def test_python_models_use_the_ecomgen_backend_with_a_packaged_handler(target):
    # Models served one request an execution on the cpu target (cpu_dynamic_batching False): like
    # a BYTES step, what waits for them is bounded by their door's admission, which refuses in ~1 ms.
    unbatched = {
        s.model_name for m in REGISTRY if target == "cpu" and not m.cpu_dynamic_batching for s in m.steps
    }
    for cfg in configs(target).values():
        if cfg.platform:
            assert cfg.platform == "ensemble" or (target == "gpu" and cfg.platform == "tensorrt_plan")
            continue
        assert cfg.backend == BACKEND
        assert cfg.parameters["handler"].string_value.startswith("ecomgen.serving.handlers.")
        assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        if cfg.max_batch_size > 0 and any(i.data_type == mc.TYPE_STRING for i in cfg.input):
            # The Python backend fails a whole batch on one lying BYTES length prefix: such a step
            # runs one request an execution (no dynamic batcher); its door's admission bounds it.
            assert not cfg.HasField("dynamic_batching"), cfg.name
        elif cfg.max_batch_size > 0 and cfg.name in unbatched:
            assert not cfg.HasField("dynamic_batching"), cfg.name
        elif cfg.max_batch_size > 0:
            policy = cfg.dynamic_batching.default_queue_policy
            assert policy.max_queue_size > 0 and policy.default_timeout_microseconds > 0, cfg.name


def _wired(cfgs: dict[str, mc.ModelConfig], name: str) -> list[str]:
    ens = cfgs[name]
    assert ens.platform == "ensemble"
    produced = {i.name for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        step_cfg = cfgs[step.model_name]
        required = {i.name for i in step_cfg.input if not i.optional}
        assert required <= set(step.input_map) <= {i.name for i in step_cfg.input}, step.model_name
        assert set(step.output_map) <= {o.name for o in step_cfg.output}
        assert set(step.input_map.values()) <= produced, (
            f"{name}: {step.model_name} reads an unproduced tensor"
        )
        produced |= set(step.output_map.values())
    assert {o.name for o in ens.output} <= produced
    return [s.model_name for s in ens.ensemble_scheduling.step]


@pytest.mark.parametrize("target", TARGETS)
def test_every_ensemble_wires_existing_tensors_in_step_order(target):
    cfgs = configs(target)
    for m in REGISTRY:
        if cfgs[m.name].platform == "ensemble":
            assert _wired(cfgs, m.name) == [s.model_name for s in m.steps]


@pytest.mark.parametrize("target", TARGETS)
def test_one_deadline_crosses_every_python_step_of_an_ensemble(target):
    cfgs = configs(target)
    for m in REGISTRY:
        ens = cfgs[m.name]
        if ens.platform != "ensemble":
            continue
        steps = list(ens.ensemble_scheduling.step)
        # The deadline is [1] a request: it reaches the Python steps that batch like the first one.
        first_batched = cfgs[steps[0].model_name].max_batch_size > 0
        python = [
            s
            for s in steps
            if not cfgs[s.model_name].platform and (cfgs[s.model_name].max_batch_size > 0) == first_batched
        ]
        assert python[0] is steps[0]
        assert steps[0].output_map[DEADLINE.name] == "_deadline_ns"
        assert cfgs[steps[0].model_name].parameters["deadline_us"].string_value == str(m.deadline_us)
        for s in python[1:]:
            assert s.input_map[DEADLINE.name] == "_deadline_ns", s.model_name
        for s in steps:
            if cfgs[s.model_name].platform == "tensorrt_plan":
                assert DEADLINE.name not in s.input_map


@pytest.mark.parametrize("target", TARGETS)
def test_network_steps_match_their_specs(target):
    cfgs = configs(target)
    for name, (m, net) in REGISTRY.networks().items():
        if target == "cpu" and m.fuse_on_cpu and name not in cfgs:
            fused = cfgs[m.name]
            assert name in fused.parameters["pipeline"].string_value
            continue
        cfg = cfgs[name]
        assert cfg.max_batch_size == net.profile.max_batch
        assert [i.name for i in cfg.input if i.name != DEADLINE.name] == [t.name for t in net.inputs]
        if target == "gpu":
            assert cfg.platform == "tensorrt_plan"
            assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in cfg.instance_group)
        else:
            assert cfg.parameters["network"].string_value == name
            assert cfg.parameters["runtime"].string_value == m.cpu_runtime


def test_fused_cpu_model_runs_the_same_steps_as_the_gpu_ensemble():
    cpu, gpu = configs("cpu"), configs("gpu")
    for m in REGISTRY:
        if m.fuse_on_cpu:
            assert not cpu[m.name].platform and cpu[m.name].parameters["handler"].string_value.endswith(
                "FusedPipeline"
            )
            assert _wired(gpu, m.name) == [s.model_name for s in m.steps]


def test_variable_tensors_declare_their_largest_shape():
    cfg = configs("cpu")["tryon_pre"]
    assert cfg.parameters["max_shape.person"].string_value == "[2048, 2048, 3]"


def test_shared_steps_must_generate_the_same_config():
    bad = dataclasses.replace(TRYON.steps[1].network, gpu_instances=3)  # type: ignore[union-attr]
    twin = dataclasses.replace(
        REGISTRY["tryon_bytes"],
        steps=(REGISTRY["tryon_bytes"].steps[0], NetworkStep(bad), *REGISTRY["tryon_bytes"].steps[2:]),
    )
    with pytest.raises(ValueError, match="different configs for 'tryon_parser'"):
        repository_models("gpu", [TRYON, twin])


def test_steps_wire_by_name_in_the_generated_ensemble():
    ens = configs("gpu")["tryon"]
    by_model = {s.model_name: s for s in ens.ensemble_scheduling.step}
    assert dict(by_model["tryon_warp"].input_map)["parse"] == "tryon_parser.parse"
    assert dict(by_model["tryon_post"].input_map)["warped_garment"] == "tryon_warp.warped_garment"
    kinds = [type(s).__name__ for s in TRYON.steps]
    assert kinds == ["PythonStep", *["NetworkStep"] * (len(kinds) - 2), "PythonStep"]
    assert isinstance(TRYON.steps[0], PythonStep) and len(wire(TRYON)) == len(kinds)


def test_max_inflight_requests_is_not_in_the_pinned_schema():
    """Both targets pin Triton 2.51, which predates ``max_inflight_requests`` (2.63 / 25.11).

    When this starts failing, the tritonclient schema has the field: set it from the spec.
    """
    assert "max_inflight_requests" not in mc.ModelEnsembling.DESCRIPTOR.fields_by_name


@pytest.mark.parametrize("target", TARGETS)
def test_the_spec_inflight_bound_reaches_every_ensemble(target):
    """Triton 2.51 cannot take ``max_inflight_requests`` (above), so the spec's bound must reach the
    generated repository another way: the ensemble's first step admits a request only with a ticket
    and its last step gives it back, both sized by the spec (ecomgen/serving/admission.py)."""
    generated = configs(target)
    ensembles = [m for m in REGISTRY if m.name in generated and generated[m.name].platform == "ensemble"]
    bounded = [m for m in ensembles if m.max_inflight_requests > 0]
    assert TRYON in bounded
    for model in bounded:
        steps = [generated[s.model_name] for s in generated[model.name].ensemble_scheduling.step]
        params = [{k: v.string_value for k, v in c.parameters.items()} for c in steps]
        admits = [(c.name, p) for c, p in zip(steps, params, strict=True) if "admission.admit" in p]
        releases = [p for p in params if "admission.release" in p]
        assert len(admits) == len(releases) == 1, model.name
        (door, admit), (release,) = admits[0], releases
        assert door == steps[0].name and admit["admission.admit"] == release["admission.release"] == door
        assert admit["admission.size"] == release["admission.size"] == str(model.max_inflight_requests)


@pytest.mark.parametrize("target", TARGETS)
def test_a_door_queues_no_more_than_its_ensemble_admits(target):
    """The door stamps a request's deadline when it runs it, so the time a request waits in the
    door's own Triton queue is not counted against that deadline: a door queue of 64 let answers
    come up to one timeout late under a burst. Every admitting door with a dynamic batcher queues at
    most ``admission.size`` requests; the rest get Triton's queue-full error at once."""
    doors = [
        c for c in configs(target).values()
        if "admission.admit" in c.parameters and c.HasField("dynamic_batching")
    ]  # fmt: skip
    assert "product_gan_pre" in {c.name for c in doors}
    assert ("tryon_pre" in {c.name for c in doors}) == (target == "gpu")  # cpu: no batcher, below
    for c in doors:
        size = int(c.parameters["admission.size"].string_value)
        assert 0 < c.dynamic_batching.default_queue_policy.max_queue_size <= size, c.name


@pytest.mark.parametrize("target", TARGETS)
def test_tryon_runs_without_the_dynamic_batcher_on_cpu_only(target):
    """Triton 2.51's dynamic batcher left tryon requests queued for up to its 500 ms idle wait
    while the step's instance was free (traced under a burst on 2 cores), and on CPU a row costs
    the same in a batch: the cpu target runs every tryon step one request an execution. The gpu
    target keeps batching, where a batch is what makes TensorRT fast."""
    generated = configs(target)
    steps = {s.model_name for m in REGISTRY if m.name in ("tryon", "tryon_bytes") for s in m.steps}
    batched = {n for n in steps if generated[n].HasField("dynamic_batching")}
    if target == "cpu":
        assert not batched
    else:
        assert {s.model_name for s in TRYON.steps if isinstance(s, NetworkStep)} <= batched
