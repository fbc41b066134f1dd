"""TensorRT path: profiles, the engine cache key and record, argument checks of ``mfif build``,
shape bookkeeping, ONNX Runtime's TensorRT provider options, and clear errors for bad engines and
missing packages. Building and running engines needs TensorRT and a GPU: those tests skip elsewhere."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from gpu_helpers import HAVE_TENSORRT, gpu_missing_reason, tensorrt_missing_reason
from mfif.cli import main as mfif_main
from mfif.errors import BackendUnavailableError, ConfigError, EngineMismatchError, InputError, ModelFileError
from mfif.hashing import sha256_bytes
from mfif.runtime.backends.ort_tensorrt import tensorrt_provider
from mfif.runtime.backends.tensorrt import Bindings
from mfif.runtime.engine_cache import (EngineKey, EngineRecord, Profile, choose_profile,
                                  default_profile, load_verified, make_profiles, read_record, record_path,
                                  runtime_problems, write_engine)
from mfif.runtime.model_info import ModelInfo

def needs_tensorrt_and_gpu():
    if not HAVE_TENSORRT:
        pytest.skip(f"TensorRT is not usable here: {tensorrt_missing_reason()}")
    reason = gpu_missing_reason()
    if reason:
        pytest.skip(f"no usable GPU: {reason}")


# ------------------------------------------------------------------------------- ONNX fixtures


def make_onnx(path: Path, info: ModelInfo | None = None, precision: str = "fp32", fixed_sources: int | None = None,
              metadata: bool = True) -> Path:
    """A real ONNX file: fused = mean over the sources (ReduceMean over axis 1), with the mfif
    metadata. ``precision`` fp16 computes between two Casts; int8 puts a Q/DQ pair on the input."""
    import onnx
    from onnx import TensorProto, helper

    info = info or ModelInfo(model="meanfuse", precision=precision)
    k_dim = fixed_sources if fixed_sources is not None else "K"
    source = helper.make_tensor_value_info("sources", TensorProto.FLOAT, [1, k_dim, "C", "H", "W"])
    fused = helper.make_tensor_value_info("fused", TensorProto.FLOAT, [1, "C", "H", "W"])
    nodes, inits, x = [], [], "sources"
    if precision == "fp16":
        nodes.append(helper.make_node("Cast", [x], ["x16"], to=TensorProto.FLOAT16))
        nodes.append(helper.make_node("ReduceMean", ["x16"], ["m16"], axes=[1], keepdims=0))
        nodes.append(helper.make_node("Cast", ["m16"], ["fused"], to=TensorProto.FLOAT))
    else:
        if precision == "int8":
            inits += [helper.make_tensor("scale", TensorProto.FLOAT, [], [1 / 127]),
                      helper.make_tensor("zero", TensorProto.INT8, [], [0])]
            nodes.append(helper.make_node("QuantizeLinear", [x, "scale", "zero"], ["q"]))
            nodes.append(helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["dq"]))
            x = "dq"
        nodes.append(helper.make_node("ReduceMean", [x], ["fused"], axes=[1], keepdims=0))
    graph = helper.make_graph(nodes, "meanfuse", [source], [fused], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        helper.set_model_props(model, info.to_metadata())
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_file(tmp_path) -> Path:
    return make_onnx(tmp_path / "meanfuse.onnx")


def sample_key(**changes) -> EngineKey:
    values = dict(onnx_sha256="ab" * 32, tensorrt_version="10.3.0", gpu_name="Orin (nvgpu)", compute_capability="8.7",
                  precision="fp16", profiles=(Profile((480, 640), (720, 1280), (1080, 1920)),))
    values.update(changes)
    return EngineKey(**values)


def fake_engine(tmp_path: Path, payload: bytes = b"not really a plan " * 64, key: EngineKey | None = None) -> Path:
    """An engine file with a correct record (the payload is not a TensorRT plan)."""
    path = tmp_path / "model.engine"
    record = EngineRecord(key or sample_key(), len(payload), sha256_bytes(payload),
                          ModelInfo(model="meanfuse", precision="fp16", sources=2, channels=3), "meanfuse.onnx")
    write_engine(path, payload, record)
    return path


# ------------------------------------------------------------------------------------ profiles


def test_profile_accepts_ordered_sizes_and_gives_trt_shapes():
    profile = Profile((480, 640), (720, 1280), (1080, 1920), sources=3, channels=1)
    profile.validate(size_multiple=8)
    assert profile.shapes() == ((1, 3, 1, 480, 640), (1, 3, 1, 720, 1280), (1, 3, 1, 1080, 1920))
    assert profile.contains((1, 3, 1, 600, 700))
    assert not profile.contains((1, 3, 1, 1088, 1920))      # taller than max
    assert not profile.contains((1, 2, 1, 600, 700))        # other source count
    assert not profile.contains((1, 3, 3, 600, 700))        # other channel count


@pytest.mark.parametrize("low, opt, high, bad", [
    ((800, 640), (720, 1280), (1080, 1920), "min=800, opt=720, max=1080"),   # min > opt
    ((480, 640), (720, 2000), (1080, 1920), "min=640, opt=2000, max=1920"),  # opt > max
    ((0, 640), (720, 1280), (1080, 1920), "at least 1, not 0"),
])
def test_profile_out_of_order_names_the_values(low, opt, high, bad):
    with pytest.raises(ConfigError, match=bad):
        Profile(low, opt, high).validate()


def test_profile_size_must_be_a_multiple_and_error_says_the_next_one():
    profile = Profile((480, 640), (720, 1280), (1080, 1920))
    profile.validate(8)
    with pytest.raises(ConfigError, match=r"max height 1080 is not a multiple of 16.*use 1088"):
        profile.validate(16)


def test_default_profile_is_rounded_up_to_the_size_multiple():
    profile = default_profile(ModelInfo(model="focusmap", size_multiple=16, sources=0, channels=0))
    assert profile.min_hw == (480, 640) and profile.opt_hw == (720, 1280) and profile.max_hw == (1088, 1920)
    assert (profile.sources, profile.channels) == (2, 3)
    profile.validate(16)
    assert default_profile(ModelInfo(model="xu2018", sources=2, channels=1)).channels == 1


def test_default_profile_takes_the_shipped_models_padded_1080p_frames():
    from mfif.runtime import Fuser

    info = Fuser(memory_limit=None).info                    # the runtime pads 1080 rows to 1088 (pad multiple 32)
    profile = default_profile(info)
    assert profile.contains((1, 2, 3, info.pad_to * -(-1080 // info.pad_to), 1920))
    profile.validate(info.pad_to)


def test_make_profiles_shares_single_values_and_pairs_lists():
    profiles = make_profiles([480], [720, 1080], [1080], [640], [1280, 1920], [1920], sources=2, channels=3)
    assert [p.opt_hw for p in profiles] == [(720, 1280), (1080, 1920)]
    assert all(p.min_hw == (480, 640) and p.max_hw == (1080, 1920) for p in profiles)


def test_make_profiles_rejects_mismatched_counts_duplicates_and_names_the_profile():
    with pytest.raises(ConfigError, match="min height has 2 values but another size has 3"):
        make_profiles([240, 480], [720, 1080, 900], [1080], [640], [1280], [1920], 2, 3)
    with pytest.raises(ConfigError, match="identical"):
        make_profiles([480, 480], [720], [1080], [640], [1280], [1920], 2, 3)
    with pytest.raises(ConfigError, match=r"profile 1: .*height must satisfy min <= opt <= max.*min=900"):
        make_profiles([480, 900], [720], [1080], [640], [1280], [1920], 2, 3)


def test_choose_profile_takes_the_containing_profile_with_the_nearest_opt():
    small = Profile((240, 320), (480, 640), (720, 1280))
    large = Profile((480, 640), (1080, 1920), (2160, 3840))
    profiles = [small, large]
    assert choose_profile(profiles, (1, 2, 3, 480, 640)) == 0     # both contain it, opt of 0 matches
    assert choose_profile(profiles, (1, 2, 3, 720, 1280)) == 1    # both contain it, nearer to 1080p
    assert choose_profile(profiles, (1, 2, 3, 1440, 2560)) == 1   # only the large one
    assert choose_profile(profiles, (1, 2, 3, 240, 320)) == 0     # only the small one


def test_frame_outside_every_profile_names_the_ranges():
    profiles = [Profile((240, 320), (480, 640), (720, 1280)), Profile((480, 640), (1080, 1920), (1080, 1920))]
    with pytest.raises(InputError) as info:
        choose_profile(profiles, (1, 2, 3, 1440, 2560))
    message = str(info.value)
    assert "1440x2560" in message and "240x320 .. 720x1280" in message and "480x640 .. 1080x1920" in message
    assert "--max-height" in message
    with pytest.raises(InputError, match="3 sources"):
        choose_profile(profiles, (1, 3, 3, 480, 640))


# --------------------------------------------------------------------------- cache key / record


def test_key_round_trips_through_json_and_lists_every_difference():
    key = sample_key(version_compatible=True)
    again = EngineKey.from_dict(json.loads(json.dumps(key.to_dict())))
    assert again == key and again.differences(key) == []
    other = sample_key(tensorrt_version="10.7.0", gpu_name="NVIDIA GeForce RTX 4090", compute_capability="8.9",
                       profiles=(Profile((480, 640), (1080, 1920), (1080, 1920)),))
    lines = key.differences(other)
    fields = [line.split(":")[0] for line in lines]
    assert fields == ["tensorrt_version", "gpu_name", "compute_capability", "profiles", "version_compatible"]
    assert "10.3.0 vs 10.7.0" in lines[0] and "Orin (nvgpu) vs NVIDIA GeForce RTX 4090" in lines[1]


def test_record_beside_the_engine_round_trips(tmp_path):
    path = fake_engine(tmp_path)
    assert record_path(path).name == "model.engine.json"
    data, record = load_verified(path)
    assert data == path.read_bytes()
    assert record.key == sample_key()
    assert record.model_info.sources == 2 and record.model_info.precision == "fp16"


def test_truncated_engine_is_refused_before_deserializing(tmp_path):
    path = fake_engine(tmp_path)
    size = path.stat().st_size
    path.write_bytes(path.read_bytes()[: size // 2])
    with pytest.raises(ModelFileError, match=rf"has {size // 2} bytes but its record says {size}.*truncated"):
        load_verified(path)


def test_corrupted_engine_is_refused_before_deserializing(tmp_path):
    path = fake_engine(tmp_path)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="corrupted: sha256"):
        load_verified(path)


def test_missing_or_bad_record_and_missing_engine_are_clear(tmp_path):
    path = fake_engine(tmp_path)
    record_path(path).write_text("{not json")
    with pytest.raises(ModelFileError, match="unreadable"):
        read_record(path)
    record_path(path).write_text(json.dumps({"format": "something/else"}))
    with pytest.raises(ModelFileError, match="not an mfif engine record"):
        read_record(path)
    record_path(path).unlink()
    with pytest.raises(ModelFileError, match="has no record"):
        load_verified(path)
    with pytest.raises(ModelFileError, match="engine file not found"):
        load_verified(tmp_path / "nowhere.engine")


def test_runtime_compatibility_rules():
    key = sample_key()
    assert runtime_problems(key, "10.3.0", "Orin (nvgpu)", "8.7") == []
    [problem] = runtime_problems(key, "10.4.0", "Orin (nvgpu)", "8.7")
    assert "built with TensorRT 10.3.0, this is TensorRT 10.4.0" in problem
    [problem] = runtime_problems(key, "10.3.0", "NVIDIA GeForce RTX 3090", "8.6")
    assert "compute capability 8.7" in problem and "RTX 3090 with 8.6" in problem
    [problem] = runtime_problems(key, "10.3.0", "Other Orin", "8.7")   # same capability, other model
    assert "same-cc" in problem
    assert runtime_problems(sample_key(hardware_compatibility="same-cc"), "10.3.0", "Other Orin", "8.7") == []
    ampere = sample_key(hardware_compatibility="ampere+")
    assert runtime_problems(ampere, "10.3.0", "NVIDIA GeForce RTX 4090", "8.9") == []
    assert "needs compute capability >= 8.0" in runtime_problems(ampere, "10.3.0", "Tesla T4", "7.5")[0]
    compatible = sample_key(version_compatible=True)
    assert runtime_problems(compatible, "10.8.1", "Orin (nvgpu)", "8.7") == []
    assert runtime_problems(compatible, "11.0.0", "Orin (nvgpu)", "8.7") == []
    assert "older than 10.3.0" in runtime_problems(compatible, "10.1.0", "Orin (nvgpu)", "8.7")[0]


def test_builder_cache_status_reuses_only_an_intact_engine_with_the_same_key(tmp_path):
    from mfif.export.tensorrt_builder import cache_status

    assert cache_status(tmp_path / "none.engine", sample_key()) == [f"no engine at {tmp_path / 'none.engine'}"]
    path = fake_engine(tmp_path)
    assert cache_status(path, sample_key()) == []
    [reason] = cache_status(path, sample_key(precision="int8"))
    assert reason.startswith("precision: fp16 vs int8")
    path.write_bytes(path.read_bytes()[:-1])
    [reason] = cache_status(path, sample_key())
    assert "truncated" in reason


# -------------------------------------------------------------------------------- ONNX facts


def test_read_onnx_gives_metadata_dims_and_hash(onnx_file):
    from mfif.export.tensorrt_builder import read_onnx
    from mfif.hashing import sha256_file

    facts = read_onnx(onnx_file)
    assert facts.info.model == "meanfuse" and facts.info.input_name == "sources"
    assert facts.input_dims == (1, None, None, None, None)
    assert facts.sha256 == sha256_file(onnx_file) and len(facts.sha256) == 64


def test_read_onnx_refuses_foreign_and_broken_files(tmp_path):
    from mfif.export.tensorrt_builder import read_onnx

    with pytest.raises(ModelFileError, match="carries no mfif metadata"):
        read_onnx(make_onnx(tmp_path / "foreign.onnx", metadata=False))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x00\xffthis is not protobuf" * 10)
    with pytest.raises(ModelFileError, match="not a readable ONNX file"):
        read_onnx(broken)
    with pytest.raises(ModelFileError, match="not found"):
        read_onnx(tmp_path / "missing.onnx")


def test_profile_must_fit_fixed_onnx_axes_and_the_model(tmp_path):
    from mfif.export.tensorrt_builder import check_profiles_fit, read_onnx

    facts = read_onnx(make_onnx(tmp_path / "k2.onnx", fixed_sources=2))
    check_profiles_fit([Profile((480, 640), (720, 1280), (1080, 1920), sources=2)], facts)
    with pytest.raises(ConfigError, match="sources 3, but the ONNX input 'sources' .* is fixed at 2"):
        check_profiles_fit([Profile((480, 640), (720, 1280), (1080, 1920), sources=3)], facts)
    grey = read_onnx(make_onnx(tmp_path / "grey.onnx", ModelInfo(model="xu2018", sources=2, channels=1)))
    with pytest.raises(ConfigError, match="takes 1 channel"):
        check_profiles_fit([Profile((480, 640), (720, 1280), (1080, 1920), channels=3)], grey)


# ------------------------------------------------------------------------------ mfif build CLI


def run_build(capsys, *argv) -> tuple[int, str]:
    code = mfif_main(["build", *map(str, argv)])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_build_refuses_min_above_max_before_importing_tensorrt(capsys, onnx_file):
    code, text = run_build(capsys, onnx_file, "--min-height", 800, "--max-height", 600)
    assert code == 2 and "min=800, opt=720, max=600" in text


def test_build_refuses_sizes_the_model_cannot_take(capsys, tmp_path):
    onnx_file = make_onnx(tmp_path / "m16.onnx", ModelInfo(model="focusmap", size_multiple=16))
    code, text = run_build(capsys, onnx_file, "--max-height", 1080)
    assert code == 2 and "max height 1080 is not a multiple of 16" in text and "use 1088" in text
    code, text = run_build(capsys, onnx_file, "--sources", 1)
    assert code == 2 and "--sources must be at least 2" in text
    code, text = run_build(capsys, onnx_file, "--min-height", 480, 720, "--opt-height", 720, 1080, 1088)
    assert code == 2 and "has 2 values but another size has 3" in text


def test_build_rejects_unknown_choices(capsys, onnx_file):
    for argv in (["--channels", 2], ["--opt-level", 7], ["--hardware-compatible", "turing"]):
        with pytest.raises(SystemExit) as exit_info:
            run_build(capsys, onnx_file, *argv)
        assert exit_info.value.code == 2


def test_build_settings_from_arguments(onnx_file, tmp_path):
    from mfif.export.build_cli import add_arguments, settings_from_args
    import argparse

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args([str(onnx_file), "--opt-height", "720", "1080", "--opt-width", "1280", "1920",
                              "--timing-cache", "none", "--version-compatible", "--workspace", "512"])
    facts, settings = settings_from_args(args)
    assert [p.opt_hw for p in settings.profiles] == [(720, 1280), (1080, 1920)]
    assert settings.timing_cache is None and settings.version_compatible and settings.workspace_mib == 512
    assert settings.device == 0  # --device auto: GPU 0
    assert settings_from_args(parser.parse_args([str(onnx_file), "--device", "cuda:1"]))[1].device == 1
    with pytest.raises(ConfigError, match="TensorRT runs on an NVIDIA GPU, not device='cpu'"):
        settings_from_args(parser.parse_args([str(onnx_file), "--device", "cpu"]))
    args = parser.parse_args([str(onnx_file), "--timing-cache", str(tmp_path / "t.cache"), "--workspace", "0"])
    with pytest.raises(ConfigError, match="at least 1 MiB, not 0"):
        settings_from_args(args)


def build_settings(*argv):
    """settings_from_args for ``mfif build ARGV`` (no TensorRT needed)."""
    import argparse

    from mfif.export.build_cli import add_arguments, settings_from_args

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return settings_from_args(parser.parse_args([str(arg) for arg in argv]))


def test_build_takes_trtexec_spellings(onnx_file, tmp_path):
    facts, settings = build_settings(onnx_file, "--optShapes=sources:1x2x3x720x1280", "--memPoolSize=workspace:2G",
                                     f"--timingCacheFile={tmp_path / 't.cache'}", "--builderOptimizationLevel=5")
    (profile,) = settings.profiles
    assert profile.min_hw == profile.opt_hw == profile.max_hw == (720, 1280)   # optShapes alone: a fixed size
    assert (profile.sources, profile.channels) == (2, 3)
    assert settings.workspace_mib == 2048 and settings.optimization_level == 5
    assert settings.timing_cache == tmp_path / "t.cache"
    _, settings = build_settings(onnx_file, "--minShapes=sources:1x3x1x480x640", "--optShapes='sources':1x3x1x720x1280",
                                 "--maxShapes=sources:1x3x1x1080x1920", "--memPoolSize=workspace:512")
    (profile,) = settings.profiles
    assert (profile.min_hw, profile.opt_hw, profile.max_hw) == ((480, 640), (720, 1280), (1080, 1920))
    assert (profile.sources, profile.channels, settings.workspace_mib) == (3, 1, 512)
    assert build_settings(onnx_file, "--memPoolSize=workspace:1536M")[1].workspace_mib == 1536


@pytest.mark.parametrize("argv, message", [
    (["--optShapes=input:1x2x3x720x1280"], "names input 'input'; this model's input is 'sources'"),
    (["--optShapes=sources:2x2x3x720x1280"], "batch 2; mfif engines take batch 1"),
    (["--optShapes=sources:1x2x720x1280"], "expected 5 positive dimensions 1xKxCxHxW"),
    (["--optShapes=sources:1x2x3x720x1280", "--opt-height", "720"], "not both"),
    (["--minShapes=sources:1x2x3x480x640"], "--optShapes, --maxShapes missing"),
    (["--minShapes=sources:1x2x3x480x640", "--optShapes=sources:1x3x3x720x1280", "--maxShapes=sources:1x2x3x1080x1920"],
     "must agree on sources and channels"),
    (["--optShapes=sources:1x2x3x720x1280", "--sources", "3"], "--sources 3 disagrees with the shapes' sources 2"),
    (["--optShapes=sources:1x2x3x720x1282"], "width 1282 is not a multiple of 8"),   # the profile's own check
    (["--memPoolSize=dlaSRAM:1"], "sets only the workspace pool"),
    (["--memPoolSize=workspace:lots"], "is not a size"),
    (["--memPoolSize=workspace:1", "--workspace", "1"], "not both"),
    (["--memPoolSize=workspace:0.5M"], "at least 1 MiB, not 0"),
])
def test_build_trtexec_spellings_refuse_bad_values_by_name(tmp_path, argv, message):
    onnx_file = make_onnx(tmp_path / "m8.onnx", ModelInfo(model="focusmap", size_multiple=8))
    with pytest.raises(ConfigError) as error:
        build_settings(onnx_file, *argv)
    assert message in str(error.value)


def test_build_fp16_and_int8_pick_the_variant_beside_the_file(tmp_path, capsys):
    base = make_onnx(tmp_path / "fm.onnx")
    with pytest.raises(ConfigError, match=r"fm_fp16.onnx not found\); make it with: mfif export .*fm.onnx --fp16"):
        build_settings(base, "--fp16")
    fp16 = make_onnx(tmp_path / "fm_fp16.onnx", ModelInfo(model="meanfuse", precision="fp16"), precision="fp16")
    int8 = make_onnx(tmp_path / "fm_int8.onnx", ModelInfo(model="meanfuse", precision="int8"), precision="int8")
    assert build_settings(base, "--fp16")[0].path == fp16
    assert build_settings(fp16, "--int8")[0].path == int8          # from any variant to another
    assert build_settings(fp16, "--fp16")[0].path == fp16
    assert build_settings(base)[0].path == base                   # no flag: the file given
    make_onnx(tmp_path / "fm_fp16.onnx", ModelInfo(model="meanfuse", precision="fp32"))   # mislabelled variant
    with pytest.raises(ModelFileError, match="is a fp32 model by its metadata, not fp16"):
        build_settings(base, "--fp16")
    with pytest.raises(SystemExit):
        build_settings(base, "--fp16", "--int8")
    assert "not allowed with argument" in capsys.readouterr().err


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_build_trtexec_command_line_gets_as_far_as_tensorrt(capsys, tmp_path):
    base = make_onnx(tmp_path / "fm.onnx")
    make_onnx(tmp_path / "fm_int8.onnx", ModelInfo(model="meanfuse", precision="int8"), precision="int8")
    code, text = run_build(capsys, base, "--int8", "--saveEngine=" + str(tmp_path / "x.engine"),
                           "--optShapes=sources:1x2x3x96x128")
    assert code == 2 and "'tensorrt' is not installed" in text
    assert f"building {tmp_path / 'fm_int8.onnx'} (int8" in text
    assert "profile 0: 96x128 .. 96x128 (HxW, tuned for 96x128), 2 sources x 3 channels" in text


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_build_without_tensorrt_names_the_extra(capsys, onnx_file):
    code, text = run_build(capsys, onnx_file)
    assert code == 2
    assert "profile 0: 480x640 .. 1080x1920 (HxW, tuned for 720x1280)" in text   # checked before the import
    assert "'tensorrt' is not installed" in text and "pip install 'mfif[tensorrt]'" in text


@pytest.mark.skipif(HAVE_TENSORRT, reason="TensorRT is installed here; this checks the message where it is not")
def test_backend_without_tensorrt_names_the_extra_after_checking_the_file(tmp_path):
    from mfif.runtime.backends.tensorrt import TensorRTBackend

    with pytest.raises(BackendUnavailableError, match=r"pip install 'mfif\[tensorrt\]'"):
        TensorRTBackend(fake_engine(tmp_path))


def test_backend_refuses_a_corrupted_engine_before_anything_else(tmp_path):
    from mfif.runtime.backends.tensorrt import TensorRTBackend

    path = fake_engine(tmp_path)
    path.write_bytes(path.read_bytes()[:10])
    with pytest.raises(ModelFileError, match="truncated"):
        TensorRTBackend(path)
    path.unlink()
    with pytest.raises(ModelFileError, match="not found"):
        TensorRTBackend(path)


def test_backend_device_option():
    from mfif.runtime.backends.tensorrt import device_index

    assert device_index("auto") == 0 and device_index("cuda") == 0 and device_index("cuda:2") == 2
    with pytest.raises(ConfigError, match="backend='onnxruntime'"):
        device_index("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu1'; use 'auto', 'cpu', 'cuda' or 'cuda:N'"):
        device_index("gpu1")


def test_fuser_dispatches_an_engine_file_to_this_backend(tmp_path):
    from mfif.runtime import Fuser

    path = fake_engine(tmp_path)
    path.write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="truncated"):     # backend auto, by the .engine suffix
        Fuser(path)
    with pytest.raises(ConfigError, match="device='cpu'"):
        Fuser(path, backend="tensorrt", device="cpu")


# --------------------------------------------------------------------------- shape bookkeeping


def test_bindings_set_only_what_changed():
    state = Bindings()
    addresses = {"sources": 0x1000, "fused": 0x2000}
    first = state.plan(0, (1, 2, 3, 480, 640), addresses)
    assert first == [("profile", 0), ("shape", (1, 2, 3, 480, 640)), ("address", "sources", 0x1000),
                     ("address", "fused", 0x2000)]
    state.commit(0, (1, 2, 3, 480, 640), addresses)
    assert state.plan(0, (1, 2, 3, 480, 640), addresses) == []                       # same frame size: nothing
    assert state.plan(0, (1, 2, 3, 720, 1280), addresses) == [("shape", (1, 2, 3, 720, 1280))]
    zero_copy = {"sources": 0x9000, "fused": 0x2000}
    assert state.plan(0, (1, 2, 3, 480, 640), zero_copy) == [("address", "sources", 0x9000)]
    switched = state.plan(1, (1, 2, 3, 480, 640), addresses)
    assert switched[0] == ("profile", 1) and ("shape", (1, 2, 3, 480, 640)) in switched and len(switched) == 4
    state.reset()                                                                      # after a failure
    assert len(state.plan(0, (1, 2, 3, 480, 640), addresses)) == 4


# ------------------------------------------------------------------------- build progress output


def test_build_progress_draws_nested_phases_and_can_cancel():
    from mfif.export.tensorrt_builder import BuildProgress

    out = io.StringIO()
    progress = BuildProgress(file=out)
    progress.phase_start("Building engine", None, 3)
    progress.phase_start("Tactic timing", "Building engine", 10)
    for step in range(10):
        assert progress.step_complete("Tactic timing", step) is True
    progress.phase_finish("Tactic timing")
    progress.step_complete("Building engine", 0)
    progress.cancel()
    assert progress.step_complete("Building engine", 1) is False   # asks TensorRT to stop
    progress.phase_finish("Building engine")
    progress.close()
    text = out.getvalue()
    assert "Building engine" in text and "Tactic timing" in text and "10/10" in text
    assert progress.phases_seen == ["Building engine", "Tactic timing"]


# ----------------------------------------------------------------- ONNX Runtime TensorRT provider


def test_ort_tensorrt_provider_options_carry_profiles_and_caches(tmp_path):
    info = ModelInfo(model="focusmap", precision="int8", size_multiple=8)
    profiles = [Profile((480, 640), (720, 1280), (1080, 1920)), Profile((240, 320), (240, 320), (480, 640), 2, 1)]
    name, options = tensorrt_provider(info, profiles, cache_dir=tmp_path / "cache", workspace_mib=1024,
                                      optimization_level=4)
    assert name == "TensorrtExecutionProvider"
    assert options["trt_profile_min_shapes"] == "sources:1x2x3x480x640,sources:1x2x1x240x320"
    assert options["trt_profile_opt_shapes"] == "sources:1x2x3x720x1280,sources:1x2x1x240x320"
    assert options["trt_profile_max_shapes"] == "sources:1x2x3x1080x1920,sources:1x2x1x480x640"
    assert options["trt_fp16_enable"] == "False" and options["trt_int8_enable"] == "False"  # strongly typed
    assert options["trt_engine_cache_enable"] == "True" and (tmp_path / "cache").is_dir()
    assert options["trt_engine_cache_path"] == options["trt_timing_cache_path"] == str(tmp_path / "cache")
    assert options["trt_max_workspace_size"] == str(1024 << 20) and options["trt_builder_optimization_level"] == "4"
    assert all(isinstance(v, str) for v in options.values())
    _, plain = tensorrt_provider(fp16=True)
    assert plain["trt_fp16_enable"] == "True" and "trt_engine_cache_enable" not in plain
    assert plain["trt_profile_max_shapes"] == "sources:1x2x3x1080x1920"


def test_ort_tensorrt_provider_rejects_bad_profiles_and_values():
    info = ModelInfo(model="focusmap", size_multiple=16)
    with pytest.raises(ConfigError, match="profile 0: .*not a multiple of 16"):
        tensorrt_provider(info, [Profile((480, 640), (720, 1280), (1080, 1920))])
    with pytest.raises(ConfigError, match="0..5"):
        tensorrt_provider(optimization_level=9)
    with pytest.raises(ConfigError, match="device_id"):
        tensorrt_provider(device_id=-1)


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_fuser_with_the_tensorrt_provider_never_falls_back_to_cpu_silently():
    ort = pytest.importorskip("onnxruntime")
    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider; the GPU tests cover it")
    from mfif.runtime.backends.onnxruntime import OnnxRuntimeBackend

    with pytest.raises(BackendUnavailableError, match="TensorrtExecutionProvider"):
        OnnxRuntimeBackend(providers=[tensorrt_provider(), "CPUExecutionProvider"])


# --------------------------------------------------------------- real engines (TensorRT + GPU only)


@pytest.mark.tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_and_run_engine(tmp_path, precision):
    needs_tensorrt_and_gpu()
    from mfif.export.tensorrt_builder import BuildSettings, build_engine
    from mfif.runtime.backends.tensorrt import TensorRTBackend

    onnx_file = make_onnx(tmp_path / f"mean_{precision}.onnx", precision=precision)
    profiles = [Profile((32, 32), (64, 96), (128, 128)), Profile((128, 128), (256, 256), (256, 384))]
    settings = BuildSettings(profiles=profiles, timing_cache=tmp_path / "timing.cache")
    engine_path = tmp_path / "mean.engine"
    result = build_engine(onnx_file, engine_path, settings, log=lambda *_: None)
    assert result.rebuilt and (tmp_path / "timing.cache").stat().st_size > 0
    assert result.record.key.precision == precision
    again = build_engine(onnx_file, engine_path, settings, log=lambda *_: None)
    assert not again.rebuilt                                            # cache hit: same key, intact file

    backend = TensorRTBackend(engine_path)
    try:
        assert backend.profiles == profiles and "TensorRT" in backend.device
        rng = np.random.default_rng(0)
        tolerance = {"fp32": 1e-5, "fp16": 2e-3, "int8": 2 / 127}[precision]
        for height, width in ((64, 96), (200, 320), (64, 96)):          # switches profile and back
            sources = rng.random((1, 2, 3, height, width), dtype=np.float32)
            fused, weights = backend.run(sources)
            assert fused.shape == (1, 3, height, width) and fused.dtype == np.float32 and weights is None
            np.testing.assert_allclose(fused, sources.mean(axis=1), atol=tolerance)
            assert set(backend.last_timings) == {"h2d", "compute", "d2h"}
            assert all(v >= 0 for v in backend.last_timings.values())
        with pytest.raises(InputError, match="outside the engine's profiles"):
            backend.run(np.zeros((1, 2, 3, 512, 512), np.float32))
        fused, _ = backend.run(sources)                                   # still works after the error
        np.testing.assert_allclose(fused, sources.mean(axis=1), atol=tolerance)
    finally:
        backend.close()
        backend.close()


def build_mean_engine(folder):
    """An engine of the mean-over-sources ONNX file, for 32x32 to 128x128 frames."""
    from mfif.export.tensorrt_builder import BuildSettings, build_engine

    settings = BuildSettings(profiles=[Profile((32, 32), (64, 64), (128, 128))], timing_cache=None)
    return build_engine(make_onnx(folder / "mean.onnx"), folder / "mean.engine", settings,
                        log=lambda *_: None).engine_path


@pytest.mark.tensorrt
def test_zero_copy_input_from_device_memory(tmp_path):
    needs_tensorrt_and_gpu()
    from mfif.runtime import cuda_buffers as cb
    from mfif.runtime.backends.tensorrt import TensorRTBackend

    backend = TensorRTBackend(build_mean_engine(tmp_path))
    sources = np.random.default_rng(1).random((1, 2, 3, 64, 64), dtype=np.float32)
    host = cb.PinnedBuffer(sources.size, np.float32)
    device = cb.DeviceBuffer(sources.nbytes)
    try:
        host.view(sources.shape)[...] = sources
        backend._stream.to_device(device, host, sources.nbytes)
        backend._stream.synchronize()
        fused, _ = backend.run_device(device.ptr, shape=sources.shape)
        np.testing.assert_allclose(fused, sources.mean(axis=1), atol=1e-5)
        view = cb.DeviceView(device.ptr, sources.shape)
        out, _ = backend.run_device(view, copy_to_host=False)
        assert out.__cuda_array_interface__["shape"] == (1, 3, 64, 64)
        with pytest.raises(InputError, match="needs its shape"):
            backend.run_device(device.ptr)
    finally:
        backend.close()
        device.free()
        host.free()


@pytest.mark.tensorrt
def test_engine_from_another_tensorrt_version_is_refused(tmp_path):
    needs_tensorrt_and_gpu()
    from mfif.runtime.backends.tensorrt import TensorRTBackend

    path = build_mean_engine(tmp_path)
    data = json.loads(record_path(path).read_text())
    data["key"]["tensorrt_version"] = "9.0.0"
    record_path(path).write_text(json.dumps(data))
    with pytest.raises(EngineMismatchError, match="built with TensorRT 9.0.0"):
        TensorRTBackend(path)
