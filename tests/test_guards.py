"""Guards around a run: outputs never replace inputs, usage errors stop early, a failing batch
fails only its own inputs, and checkpoints are never unpickled without consent."""

from __future__ import annotations

import argparse
import hashlib
import shutil
from pathlib import Path

import pytest
import torch

from hfgi_cli.engine import load_model
from hfgi_cli.inputs import collect_inputs
from hfgi_cli.models.hfgi import SMALL_CONFIG, CheckpointError, make_random_checkpoint, read_checkpoint
from hfgi_cli.pipeline import Job, Pipeline, RunOptions

from .conftest import FACES, run_cli


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_output_folder_equal_to_input_folder_never_overwrites(small_ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    shutil.copy(FACES / "00044.jpg", folder / "a.png")  # --aligned output would be folder/a.png
    before = _digest(folder / "a.png")
    result = run_cli("invert", str(folder), "-o", str(folder), "--checkpoint", str(small_ckpt), "--aligned",
                     "--quiet")
    assert result.returncode == 1
    assert "would overwrite it" in result.stderr and str(folder / "a.png") in result.stderr
    assert _digest(folder / "a.png") == before


def test_output_folder_inside_input_folder_is_not_rescanned(small_ckpt: Path, tmp_path: Path) -> None:
    folder = tmp_path / "faces"
    folder.mkdir()
    shutil.copy(FACES / "00044.jpg", folder / "a.jpg")
    args = ["invert", str(folder), "-o", str(folder / "out"), "--checkpoint", str(small_ckpt), "--aligned",
            "--json"]
    first = run_cli(*args)
    second = run_cli(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert len(second.stdout.splitlines()) == 1  # only a.jpg, not out/a.png from the first run
    assert '"skipped"' in second.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp16", "--device", "cpu"], "fp16 needs a GPU"),
        (["--precision", "fp64"], "--precision must be auto, fp32, fp16 or bf16"),
        (["--device", "gpu"], "--device must be"),
        (["-a", "smile", "-s", "1", "-a", "smile", "-s", "1"], "asked for twice"),
        (["-a", "smil", "-s", "1"], "unknown attribute 'smil'"),
    ],
)
def test_usage_errors_stop_before_any_work(small_ckpt: Path, tmp_path: Path, args: list[str], message: str) -> None:
    command = "edit" if "-a" in args else "invert"
    extra = ["-a", "age"] if command == "edit" and "-a" not in args else []
    result = run_cli(command, str(FACES / "00044.jpg"), "-o", str(tmp_path / "out"), "--checkpoint",
                     str(small_ckpt), "--aligned", "--weights-dir", str(tmp_path / "empty"), *extra, *args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_failing_batch_fails_only_its_inputs(small_ckpt: Path, tmp_path: Path) -> None:
    model = load_model(small_ckpt, device="cpu", batch_size=1)
    calls = {"n": 0}
    real_decode = model.net.decode

    def flaky_decode(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_decode(*args, **kwargs)

    model.net.decode = flaky_decode  # type: ignore[method-assign]
    items, _ = collect_inputs([str(p) for p in sorted(FACES.glob("*.jpg"))[:3]])
    done: list[Job] = []
    pipeline = Pipeline(model, RunOptions(tmp_path, [], aligned=True, io_workers=1))
    summary = pipeline.run(items, done.append)
    assert [j.status for j in summary.jobs] == ["ok", "error", "ok"]
    assert "out of memory" in summary.jobs[1].error and "--batch-size" in summary.jobs[1].error
    assert summary.exit_code == 1 and len(done) == 3
    assert not (tmp_path / f"{items[1].rel}.png").exists()
    # the same pipeline runs again: everything but the failed input is skipped
    again = pipeline.run(items, done.append)
    assert [j.status for j in again.jobs] == ["skipped", "ok", "skipped"] and again.exit_code == 0


def test_checkpoints_with_python_objects_need_consent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ckpt = make_random_checkpoint(None, SMALL_CONFIG, seed=5)
    ckpt["opts"] = argparse.Namespace(**ckpt["opts"])  # as some training scripts save it
    torch.save(ckpt, tmp_path / "ns.pt")
    with pytest.raises(CheckpointError, match="HFGI_TRUST_CHECKPOINT=1"):
        read_checkpoint(tmp_path / "ns.pt")
    monkeypatch.setenv("HFGI_TRUST_CHECKPOINT", "1")
    with pytest.warns(UserWarning, match="full unpickling"):
        assert read_checkpoint(tmp_path / "ns.pt")["opts"].dataset_type == "ffhq_encode"
