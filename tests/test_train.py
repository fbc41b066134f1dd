"""Training: losses, a few steps lower the loss, end-to-end runs (checkpoints, validation,
reproducibility, resume), the ``mfif train`` command and its bad inputs, DDP under torchrun."""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")
pytest.importorskip("tqdm")

from mfif.cli import main as mfif_main  # noqa: E402
from mfif.errors import ConfigError, DataError, ModelFileError  # noqa: E402
from mfif.scenes import scene  # noqa: E402
from mfif.train import losses  # noqa: E402
from mfif.train.checkpoint import load_checkpoint, save_checkpoint  # noqa: E402
from mfif.train.data import DataWarning, SynthConfig, SyntheticPairs  # noqa: E402
from mfif.train.models import build_model  # noqa: E402
from mfif.train.config import TrainConfig  # noqa: E402
from mfif.train.trainer import train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def photo_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sharp")
    for i in range(24):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), scene(96, 120, seed=i))
    return folder


def tiny_config(photo_dir, out, **overrides) -> TrainConfig:
    values = dict(model="focusmap", model_config={"scale": 2}, data=str(photo_dir), out=str(out), epochs=2,
                  steps_per_epoch=2, batch_size=2, crop=32, val_count=2, val_crop=32, warmup_steps=1)
    values.update(overrides)
    return TrainConfig(**values)


def test_ssim_psnr_and_unsupervised_loss():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 40, 40)
    torch.testing.assert_close(losses.ssim(x, x), torch.ones(2))
    assert (losses.psnr(x, x) > 90).all() and (losses.ssim(x, torch.rand(2, 3, 40, 40)) < 0.2).all()
    assert abs(losses.psnr(torch.zeros(1, 1, 4, 4), torch.full((1, 1, 4, 4), 1.0)).item()) < 1e-4
    # Unsupervised loss: taking each source where it is sharp beats the average of the sources.
    sharp = torch.rand(1, 3, 64, 64)
    smooth = torch.nn.functional.avg_pool2d(sharp, 9, stride=1, padding=4)
    left = torch.zeros(1, 1, 64, 64)
    left[..., :32] = 1
    a, b = left * sharp + (1 - left) * smooth, left * smooth + (1 - left) * sharp
    sources = torch.stack([a, b], dim=1)
    chosen = losses.unsupervised_ssim_loss(sharp, sources)
    assert chosen < losses.unsupervised_ssim_loss(sources.mean(1), sources) - 0.05


@pytest.mark.parametrize("name,config", [("xu2018", {"filters": 16}), ("mustafa2019", {"features": 8, "branch": 4}),
                                         ("focusmap", {"scale": 2})])
def test_a_few_steps_lower_the_loss(name, config):
    photos = [scene(96, 120, seed=i) for i in range(4)]
    batch = torch.utils.data.default_collate([SyntheticPairs(photos, SynthConfig(crop=48), 4, seed=1)[i]
                                              for i in range(4)])
    torch.manual_seed(0)
    model = build_model(name, **config)
    optimizer = torch.optim.Adam(model.parameters(), lr={"xu2018": 1e-3, "focusmap": 1e-2}.get(name, 3e-3))
    first = model.loss(batch).item()
    for _ in range(12):
        loss = model.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert model.loss(batch).item() < 0.9 * first


def _weights(path) -> dict:
    return {k: v.clone() for k, v in load_checkpoint(path).model.state_dict().items()}


def test_training_run_writes_checkpoints_and_validation(photo_dir, tmp_path):
    summary = train(tiny_config(photo_dir, tmp_path / "run"))
    assert len(summary["epochs"]) == 2 and summary["photos"] > 10
    for record in summary["epochs"]:
        assert {"psnr", "ssim", "average_psnr", "average_ssim"} <= set(record) and np.isfinite(record["loss"])
    best = load_checkpoint(tmp_path / "run" / "focusmap.safetensors")
    assert best.model.config["scale"] == 2 and "val.psnr" in best.metadata
    assert "train.epoch" not in best.metadata and not best.extra_tensors     # shippable: no optimizer state
    last = load_checkpoint(tmp_path / "run" / "last.safetensors")
    assert last.metadata["train.epoch"] == "1" and last.metadata["train.step"] == "4" and last.extra_tensors
    log = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]


def test_save_period_keeps_the_weights_of_every_nth_epoch(photo_dir, tmp_path):
    train(tiny_config(photo_dir, tmp_path / "run", epochs=4, steps_per_epoch=1, save_period=2))
    kept = sorted(path.name for path in (tmp_path / "run").glob("epoch_*.safetensors"))
    assert kept == ["epoch_002.safetensors", "epoch_004.safetensors"]
    second, fourth = (load_checkpoint(tmp_path / "run" / name) for name in kept)
    assert second.metadata["train.step"] == "2" and not second.extra_tensors     # weights only
    assert all(torch.equal(value, _weights(tmp_path / "run" / "last.safetensors")[key])
               for key, value in fourth.model.state_dict().items())
    with pytest.raises(ConfigError, match="save_period"):
        tiny_config(photo_dir, tmp_path / "bad", save_period=-1)


def test_learning_curve_scores_the_start_and_every_kept_epoch(photo_dir, tmp_path, capsys):
    from mfif.benchmarks import learning_curve
    from mfif.evaluation.methods import get_method
    from mfif.evaluation.quality import evaluate
    from mfif.evaluation.scoring import folder_items
    from mfif.scenes import multi_focus

    pairs = tmp_path / "pairs"
    pairs.mkdir()
    for index in range(2):
        a, b = multi_focus(scene(64, 80, seed=index), "blobs", seed=index)
        cv2.imwrite(str(pairs / f"p{index}_A.png"), a)
        cv2.imwrite(str(pairs / f"p{index}_B.png"), b)
    torch.manual_seed(0)
    start = save_checkpoint(tmp_path / "start.safetensors", build_model("focusmap", features=4, levels=2, scale=2))
    train(tiny_config(photo_dir, tmp_path / "run", init=str(start), save_period=1))
    out = tmp_path / "curve"
    argv = [str(tmp_path / "run"), "--pairs", str(pairs), "--pair", "p1", "--baselines", "average", "--out", str(out)]
    assert learning_curve.main(argv) == 0
    rows = list(csv.DictReader((out / "curve.csv").open()))
    assert [int(r["step"]) for r in rows] == [0, 2, 4] and rows[0]["val_psnr"] == ""
    assert all(0 < float(r["mean"]) <= 1 for r in rows) and (out / "curve.png").is_file()
    epoch_2 = get_method(f"model:{tmp_path / 'run' / 'epoch_002.safetensors'}")
    direct = evaluate(folder_items([pairs]), [epoch_2], tmp_path / "direct", metrics=["QG"], grid_pairs=0,
                      progress=False)
    assert float(rows[2]["p1"]) == pytest.approx(float(direct.rows[("pairs", "p1", "epoch_002")]["QG"]), abs=1e-4)
    assert "| average (baseline) |" in (out / "curve.md").read_text()
    assert learning_curve.main(argv) == 0                      # scored already: the same table again
    assert list(csv.DictReader((out / "curve.csv").open())) == rows
    save_checkpoint(start, build_model("focusmap", features=4, levels=2, scale=2))   # another file at that path
    assert learning_curve.main([*argv[:-1], str(tmp_path / "curve2")]) == 0
    assert "has changed since the run started" in capsys.readouterr().out
    assert [int(r["step"]) for r in csv.DictReader((tmp_path / "curve2" / "curve.csv").open())] == [2, 4]
    assert learning_curve.main([str(tmp_path / "run"), "--pairs", str(pairs), "--pair", "nope"]) == 2
    assert "--pair nope" in capsys.readouterr().err
    train(tiny_config(photo_dir, tmp_path / "plain"))
    assert learning_curve.main([str(tmp_path / "plain"), "--pairs", str(pairs), "--out", str(out)]) == 2
    assert "--save-period" in capsys.readouterr().err


def test_same_seed_same_weights_and_resume_continues_exactly(photo_dir, tmp_path):
    train(tiny_config(photo_dir, tmp_path / "a"))
    train(tiny_config(photo_dir, tmp_path / "b"))
    a, b = _weights(tmp_path / "a" / "last.safetensors"), _weights(tmp_path / "b" / "last.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    train(tiny_config(photo_dir, tmp_path / "c", seed=1))
    c = _weights(tmp_path / "c" / "last.safetensors")
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # One epoch, then resume for the second: the same weights as two epochs straight.
    train(tiny_config(photo_dir, tmp_path / "d", stop_after=1))
    assert load_checkpoint(tmp_path / "d" / "last.safetensors").metadata["train.epoch"] == "0"
    train(tiny_config(photo_dir, tmp_path / "d", resume=str(tmp_path / "d" / "last.safetensors")))
    d = _weights(tmp_path / "d" / "last.safetensors")
    assert all(torch.equal(a[k], d[k]) for k in a)


def test_init_fine_tunes_from_a_checkpoint_with_its_config_and_overrides(photo_dir, tmp_path):
    """--init starts from a checkpoint's weights (a shipped file has no training state) with a
    fresh optimizer; its config holds unless --config says otherwise; the boundary loss trains."""
    torch.manual_seed(3)
    start = save_checkpoint(tmp_path / "start.safetensors", build_model("focusmap", features=4, levels=2, scale=2))
    config = tiny_config(photo_dir, tmp_path / "ft", init=str(start), epochs=1, steps_per_epoch=1, lr=1e-9,
                         model_config={"scale": 4, "temperature": 0.5, "boundary_weight": 1.0})
    train(config)
    tuned = load_checkpoint(tmp_path / "ft" / "last.safetensors")
    assert tuned.model.config["features"] == 4 and tuned.model.config["levels"] == 2
    assert tuned.model.config["scale"] == 4 and tuned.model.config["temperature"] == 0.5
    assert tuned.metadata["train.step"] == "1"
    before = _weights(start)
    after = _weights(tmp_path / "ft" / "last.safetensors")
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)     # lr 1e-9: one tiny step
    with pytest.raises(ConfigError, match="holds a focusmap"):
        train(tiny_config(photo_dir, tmp_path / "o", model="xu2018", init=str(start)))


def test_boundary_band_of_focus_regions():
    focus = torch.zeros(1, 2, 30, 40)
    focus[:, 0, :, :25] = 1
    focus[:, 1, :, 25:] = 1
    band = losses.boundary_band(focus, radius=3)
    assert band.shape == (1, 1, 30, 40) and band[0, 0, :, 22:28].all() and band.sum() == 30 * 6
    assert losses.boundary_band(torch.stack([torch.ones(30, 40), torch.zeros(30, 40)])[None]).sum() == 0


def test_bad_inputs_give_clear_errors(photo_dir, tmp_path):
    with pytest.raises(DataError, match="not found"):
        train(tiny_config(tmp_path / "missing", tmp_path / "o"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        train(tiny_config(tmp_path / "empty", tmp_path / "o"))
    with pytest.raises(ConfigError, match="unknown model 'resnet'"):
        tiny_config(photo_dir, tmp_path / "o", model="resnet")
    with pytest.raises(ConfigError, match="bad config"):
        train(tiny_config(photo_dir, tmp_path / "o", model_config={"colour": 1}))
    with pytest.raises(ConfigError, match="unknown synthetic-pair setting"):
        train(tiny_config(photo_dir, tmp_path / "o", synth={"blurriness": 2}))
    with pytest.raises(ConfigError, match="only train the unsupervised"):
        tiny_config(photo_dir, tmp_path / "o", real=[str(tmp_path)])
    with pytest.raises(ConfigError, match="batch_size"):
        tiny_config(photo_dir, tmp_path / "o", batch_size=0)
    train(tiny_config(photo_dir, tmp_path / "ok", epochs=1, steps_per_epoch=1))
    with pytest.raises(ModelFileError, match="no training state"):
        train(tiny_config(photo_dir, tmp_path / "o", resume=str(tmp_path / "ok" / "focusmap.safetensors")))
    with pytest.raises(ConfigError, match="holds a focusmap"):
        train(tiny_config(photo_dir, tmp_path / "o", model="xu2018", resume=str(tmp_path / "ok" / "last.safetensors")))


def test_unreadable_and_tiny_images_are_skipped_with_a_counted_warning(photo_dir, tmp_path):
    data = tmp_path / "mixed"
    shutil.copytree(photo_dir, data)
    (data / "broken.jpg").write_bytes(b"\xff\xd8 truncated")
    cv2.imwrite(str(data / "tiny.png"), scene(9, 9))
    with pytest.warns(DataWarning, match="skipped 2 of 26 images"):
        summary = train(tiny_config(data, tmp_path / "run", epochs=1))
    assert summary["photos"] > 10 and len(summary["epochs"]) == 1


def test_cli(photo_dir, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cli"
    argv = ["train", "--model", "mustafa2019", "--config", "features=8", "--config", "branch=4", "--data",
            str(photo_dir), "--out", str(out), "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "2",
            "--crop", "32", "--val-count", "2", "--val-crop", "32"]
    assert mfif_main(argv) == 0
    printed = capsys.readouterr().out
    assert "validation PSNR" in printed and "pixel average" in printed
    assert load_checkpoint(out / "mustafa2019.safetensors").model.config["features"] == 8

    assert mfif_main(["train", "--model", "nope", "--data", str(photo_dir)]) == 2
    assert "unknown model 'nope'" in capsys.readouterr().err
    assert mfif_main(["train", "--data", str(tmp_path / "absent"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    import mfif.paths

    monkeypatch.setattr(mfif.paths, "shared_data_dir", lambda: None)
    assert mfif_main(["train", "--out", str(out)]) == 2
    assert "pass --data" in capsys.readouterr().err


@pytest.fixture()
def usual_umask():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_a_run_never_replaces_another(photo_dir, tmp_path, monkeypatch, usual_umask):
    """The default folder runs/MODEL is numbered when it holds a run; any other folder holding a
    run is refused; --resume continues in its own folder. Each run keeps its best and last
    checkpoints, its log, results.csv and the learning curve, all readable by others (issue 16)."""
    import stat

    monkeypatch.chdir(tmp_path)
    first = train(tiny_config(photo_dir, "", epochs=1))
    assert first["out"] == "runs/focusmap"
    best = (tmp_path / "runs/focusmap/focusmap.safetensors").read_bytes()
    second = train(tiny_config(photo_dir, "", epochs=2, seed=1))
    assert second["out"] == "runs/focusmap2"
    assert (tmp_path / "runs/focusmap/focusmap.safetensors").read_bytes() == best     # untouched
    assert len((tmp_path / "runs/focusmap/log.jsonl").read_text().splitlines()) == 1
    run = tmp_path / "runs/focusmap2"
    with open(run / "results.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"] and {"loss", "psnr", "ssim", "lr", "seconds"} <= set(rows[0])
    assert float(rows[1]["psnr"]) == pytest.approx(second["epochs"][1]["psnr"])
    if importlib.util.find_spec("matplotlib"):
        assert cv2.imread(str(run / "results.png")) is not None
    for path in run.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
    assert not [p for p in run.iterdir() if p.name.startswith(".")]               # no temporary files left
    assert json.loads((run / "train_config.json").read_text())["out"] == "runs/focusmap2"

    with pytest.raises(ConfigError, match=r"holds an earlier run \(best validation PSNR .* dB at epoch 2 of 2\)"):
        train(tiny_config(photo_dir, run))
    assert load_checkpoint(run / "last.safetensors").metadata["train.epoch"] == "1"
    stopped = train(tiny_config(photo_dir, tmp_path / "mine", stop_after=1))
    resumed = train(tiny_config(photo_dir, "", resume=str(tmp_path / "mine" / "last.safetensors")))
    assert resumed["out"] == stopped["out"] == str(tmp_path / "mine")
    assert [json.loads(line)["epoch"] for line in (tmp_path / "mine/log.jsonl").read_text().splitlines()] == [1, 2]


def test_a_piped_log_gets_one_plain_line_per_epoch_with_the_runs_eta(photo_dir, tmp_path, capsys):
    argv = ["train", "--data", str(photo_dir), "--out", str(tmp_path / "run"), "--epochs", "2", "--steps-per-epoch",
            "2", "--batch-size", "2", "--crop", "32", "--val-count", "2", "--val-crop", "32", "--config", "scale=2"]
    assert mfif_main(argv) == 0                 # capsys: stdout and stderr are no terminal
    captured = capsys.readouterr()
    assert "\r" not in captured.out + captured.err and "step/s" not in captured.err
    lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2 and "epoch 1/2: loss" in lines[0] and "ETA" in lines[0] and "ETA" not in lines[1]
    assert "results.csv" in captured.out


@pytest.mark.slow
def test_ddp_under_torchrun(photo_dir, tmp_path):
    torchrun = shutil.which("torchrun") or str(Path(sys.executable).with_name("torchrun"))
    if not Path(torchrun).exists():
        pytest.skip("torchrun not found")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    command = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "mfif.cli", "train", "--device", "cpu",
               "--data", str(photo_dir), "--out", str(tmp_path / "ddp"), "--epochs", "1", "--steps-per-epoch", "2",
               "--batch-size", "2", "--crop", "32", "--val-count", "2", "--val-crop", "32"]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "x2 (DDP)" in result.stdout and "validation PSNR" in result.stdout
    last = load_checkpoint(tmp_path / "ddp" / "last.safetensors")
    assert last.metadata["train.step"] == "2"
