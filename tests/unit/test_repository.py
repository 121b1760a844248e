"""The committed model repository is exactly what the specs generate, and is coherent."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from ecomgen_client.specs import ENSEMBLES, SPECS, TRYON
from export.repository import DEFAULT_ROOT, TARGETS, check_repository, repository_models, write_repository


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def test_committed_repository_is_up_to_date():
    problems = check_repository(DEFAULT_ROOT)
    assert not problems, "run `python -m export.repository`:\n" + "\n".join(problems)


def test_check_detects_a_hand_edit(tmp_path):
    write_repository(tmp_path, "cpu")
    cfg = tmp_path / "cpu" / "product_gan" / "config.pbtxt"
    cfg.write_text(cfg.read_text().replace("max_batch_size: 64", "max_batch_size: 8"))
    problems = check_repository(tmp_path, ["cpu"])
    assert len(problems) == 1 and "max_batch_size: 8" in problems[0]


@pytest.mark.parametrize("target", TARGETS)
def test_configs_round_trip_through_the_schema(target):
    for model in repository_models(target):
        path = DEFAULT_ROOT / target / model.name / "config.pbtxt"
        assert parse(path) == model.config
        assert (path.parent / "1").is_dir()


@pytest.mark.parametrize("target", TARGETS)
def test_public_contract_is_the_same_on_every_target(target):
    for spec in SPECS.values():
        cfg = parse(DEFAULT_ROOT / target / spec.name / "config.pbtxt")
        assert cfg.max_batch_size == spec.max_batch_size
        assert [(i.name, mc.DataType.Name(i.data_type), tuple(i.dims)) for i in cfg.input] == [
            (t.name, t.config_dtype, t.dims) for t in spec.inputs
        ]
        assert [(o.name, mc.DataType.Name(o.data_type), tuple(o.dims)) for o in cfg.output] == [
            (t.name, t.config_dtype, t.dims) for t in spec.outputs
        ]
        assert cfg.parameters["num_classes"].string_value == str(len(spec.class_names))


def test_cpu_models_batch_with_bounded_queues():
    for spec in SPECS.values():
        cfg = parse(DEFAULT_ROOT / "cpu" / spec.name / "config.pbtxt")
        assert cfg.backend == "python"
        db = cfg.dynamic_batching
        assert list(db.preferred_batch_size) == list(spec.batching.preferred_batch_sizes)
        assert db.max_queue_delay_microseconds == spec.batching.max_queue_delay_us
        assert 0 < db.default_queue_policy.max_queue_size == spec.queue.max_queue_size
        assert db.default_queue_policy.default_timeout_microseconds > 0
        assert cfg.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        version = DEFAULT_ROOT / "cpu" / spec.name / "1"
        for f in ("model.py", "ecomgen_common.py", "ecomgen_triton.py"):
            assert (version / f).is_file()


def test_gpu_ensemble_wires_existing_tensors():
    configs = {m.name: m.config for m in repository_models("gpu")}
    for spec in SPECS.values():
        _wired(configs, spec.name)


def test_gpu_engine_config_matches_the_tensorrt_profile():
    configs = {m.name: m.config for m in repository_models("gpu")}
    for spec in SPECS.values():
        engine = configs[spec.network.name]
        assert engine.platform == "tensorrt_plan"
        assert engine.max_batch_size == spec.network.profile.max_batch
        assert all(g.kind == mc.ModelInstanceGroup.KIND_GPU for g in engine.instance_group)
        assert engine.dynamic_batching.default_queue_policy.max_queue_size > 0


def _wired(configs: dict, name: str) -> None:
    ens = configs[name]
    assert ens.platform == "ensemble"
    produced = {i.name for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        step_cfg = configs[step.model_name]
        assert set(step.input_map) == {i.name for i in step_cfg.input}
        assert set(step.output_map) <= {o.name for o in step_cfg.output}
        assert set(step.input_map.values()) <= produced, (
            f"{name}: {step.model_name} reads an unproduced tensor"
        )
        produced |= set(step.output_map.values())
    assert {o.name for o in ens.output} <= produced


@pytest.mark.parametrize("target", TARGETS)
def test_tryon_ensembles_wire_existing_tensors_on_every_target(target):
    configs = {m.name: m.config for m in repository_models(target)}
    for spec in ENSEMBLES.values():
        _wired(configs, spec.name)
        _wired(configs, spec.bytes_model)
        steps = [s.model_name for s in configs[spec.name].ensemble_scheduling.step]
        assert steps == [f"{spec.name}_pre", *(n.name for n in spec.networks), f"{spec.name}_post"]


@pytest.mark.parametrize("target", TARGETS)
def test_tryon_contract_and_batching(target):
    configs = {m.name: m.config for m in repository_models(target)}
    ens = configs[TRYON.name]
    assert [(i.name, mc.DataType.Name(i.data_type), tuple(i.dims)) for i in ens.input] == [
        ("person", "TYPE_UINT8", (-1, -1, 3)),
        ("garment", "TYPE_UINT8", (-1, -1, 3)),
    ]
    assert [(o.name, tuple(o.dims)) for o in ens.output] == [
        ("image", (256, 192, 3)),
        ("warped_garment", (256, 192, 3)),
        ("mask", (256, 192)),
    ]
    assert [mc.DataType.Name(i.data_type) for i in configs[TRYON.bytes_model].input] == ["TYPE_STRING"] * 2
    # Every step batches dynamically behind a bounded queue.
    for step in ens.ensemble_scheduling.step:
        cfg = configs[step.model_name]
        assert cfg.max_batch_size > 0
        assert cfg.HasField("dynamic_batching")
        assert cfg.dynamic_batching.default_queue_policy.max_queue_size > 0
    for net in TRYON.networks:
        cfg = configs[net.name]
        if target == "gpu":
            assert cfg.platform == "tensorrt_plan"
            assert cfg.max_batch_size == net.profile.max_batch
        else:
            assert cfg.backend == "python"
            assert cfg.parameters["runtime"].string_value == TRYON.cpu_runtime
            assert (DEFAULT_ROOT / "cpu" / net.name / "1" / "model.py").is_file()


def test_max_inflight_requests_is_not_in_the_pinned_schema():
    """Both targets pin Triton 2.51, which predates ``max_inflight_requests`` (2.63 / 25.11).

    When this starts failing, the tritonclient schema has the field: set it from the spec.
    """
    assert "max_inflight_requests" not in mc.ModelEnsembling.DESCRIPTOR.fields_by_name
    assert TRYON.max_inflight_requests > 0
