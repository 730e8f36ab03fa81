"""Issue 13: the pipeline as a Ray Data job, on a local 2-CPU Ray cluster started once for these tests.

The Ray run must be the single-machine run: the same files, pixel for pixel, the same latents, the
same --json lines and exit status, the same skip-if-done; a model actor killed mid-run (SIGKILL)
costs its batch a retry, not an output.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hfgi_cli.inputs import collect_inputs

from .conftest import FACES, PHOTOS, run_cli
from .test_robustness import assert_outputs_valid

ray = pytest.importorskip("ray")  # a guard only: CI installs the extra (pip install -e '.[test]')

from hfgi_cli.engine import load_model  # noqa: E402
from hfgi_cli.pipeline import Job, RunOptions  # noqa: E402
from hfgi_cli.ray import HFGIEdit, plan_pools, run_on_ray  # noqa: E402


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local cluster for every Ray test: the CLI and ``run_on_ray`` join it instead of starting one."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two faces and a photo (detected, aligned, pasted back), and a file that is not an image."""
    root = tmp_path_factory.mktemp("ray_in")
    for name in ("00044.jpg", "00051.jpg"):
        shutil.copy(FACES / name, root / name)
    shutil.copy(PHOTOS / "astronaut.png", root / "astronaut.png")
    (root / "broken.jpg").write_text("not a picture\n")
    return root


def edit_args(ckpt: Path, directions: Path, src: Path | str, out: Path | str, *extra: str) -> list[str]:
    return ["edit", str(src), "-o", str(out), "-a", "smile", "-s", "2", "--checkpoint", str(ckpt),
            "--directions", str(directions), "--device", "cpu", "--quiet", "--json", "--quality", *extra]


def reports(stdout: str, out: Path) -> dict[str, dict]:
    """--json lines by input, output paths relative to OUT, timings dropped."""
    by_input = {}
    for line in stdout.splitlines():
        record = json.loads(line)
        record["outputs"] = sorted(str(Path(p).relative_to(out)) for p in record["outputs"])
        del record["seconds"]
        by_input[record["input"]] = record
    return by_input


def files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def assert_same_outputs(expected: Path, out: Path, same_record: Callable[[dict, dict], None] | None = None) -> None:
    """The same files under both folders: pixel-identical images and latent files with equal keys,
    tensors and values; ``same_record(expected, got)`` checks and aligns what may differ first."""
    assert files(out) == files(expected)
    for name in files(expected):
        a, b = expected / name, out / name
        if name.endswith(".pt"):
            ra, rb = torch.load(a), torch.load(b)
            assert ra.keys() == rb.keys()
            if same_record is not None:
                same_record(ra, rb)
            for key in ra:
                if isinstance(ra[key], torch.Tensor):
                    assert torch.equal(ra[key], rb[key]), (name, key)
                else:
                    assert ra[key] == rb[key], (name, key)
        else:
            assert np.array_equal(np.asarray(Image.open(a)), np.asarray(Image.open(b))), name


@pytest.fixture(scope="module")
def both_runs(ray_cluster: None, inputs: Path, small_ckpt: Path, small_directions: Path,
              tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """The same edit on one machine and on the cluster. CPU float32 results depend on the thread count
    (oneDNN splits sums across threads: the distortion map differs in the last bit), so the
    single-machine run uses one thread, as the 2-CPU cluster's one model actor does."""
    root = tmp_path_factory.mktemp("ray_out")
    runs = {}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runs["local"] = (root / "local", run_cli(*edit_args(small_ckpt, small_directions, inputs, root / "local")))
    finally:
        torch.set_num_threads(threads)
    runs["ray"] = (root / "ray", run_cli(*edit_args(small_ckpt, small_directions, inputs, root / "ray", "--ray")))
    return runs


def test_ray_run_equals_the_single_machine_run(both_runs: dict) -> None:
    (local_out, local), (ray_out, on_ray) = both_runs["local"], both_runs["ray"]
    assert local.returncode == on_ray.returncode == 1  # the broken file
    assert "astronaut_smile+2.png" in files(ray_out) and "00044_smile+2_0.pt" in files(ray_out)
    assert_same_outputs(local_out, ray_out)
    assert reports(local.stdout, local_out) == reports(on_ray.stdout, ray_out)
    assert all(r["quality"] for r in reports(on_ray.stdout, ray_out).values() if r["status"] == "ok")


def test_ray_reports_each_bad_input_on_one_line(both_runs: dict, inputs: Path) -> None:
    local, on_ray = both_runs["local"][1], both_runs["ray"][1]
    errors = [line for line in on_ray.stderr.splitlines() if line.startswith("error:")]
    assert errors == [line for line in local.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {inputs / 'broken.jpg'}: not an image (unrecognised format)"]
    assert on_ray.stderr.splitlines()[-1].startswith("3 done, 1 failed; ")


def test_ray_rerun_skips_what_is_done_and_takes_file_uris(both_runs: dict, inputs: Path, small_ckpt: Path,
                                                          small_directions: Path) -> None:
    out = both_runs["ray"][0]
    before = {name: (out / name).stat().st_mtime_ns for name in files(out)}
    again = run_cli(*edit_args(small_ckpt, small_directions, inputs.as_uri(), out.as_uri(), "--ray"))
    assert again.returncode == 1, again.stderr
    status = {Path(r["input"]).name: r["status"] for r in map(json.loads, again.stdout.splitlines())}
    assert status == {"00044.jpg": "skipped", "00051.jpg": "skipped", "astronaut.png": "skipped",
                      "broken.jpg": "error"}
    assert {name: (out / name).stat().st_mtime_ns for name in files(out)} == before


# ------------------------------------------------------------------------- URIs (pyarrow filesystems)
def uri_reports(stdout: str, out_uri: str) -> dict[str, dict]:
    """--json lines by input URI, output URIs relative to OUT's, timings dropped."""
    by_input = {}
    for line in stdout.splitlines():
        record = json.loads(line)
        assert all(p.startswith(out_uri + "/") for p in record["outputs"]), record
        record["outputs"] = sorted(p.removeprefix(out_uri + "/") for p in record["outputs"])
        del record["seconds"]
        by_input[record["input"]] = record
    return by_input


@pytest.fixture(scope="module")
def uri_run(ray_cluster: None, inputs: Path, small_ckpt: Path, small_directions: Path,
            tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """The Ray run with INPUT and OUT as file:// URIs: the object-store code path (pyarrow), on a local disk."""
    out = tmp_path_factory.mktemp("ray_uri") / "out"
    return out, run_cli(*edit_args(small_ckpt, small_directions, inputs.as_uri(), out.as_uri(), "--ray"))


def test_uri_run_writes_what_the_single_machine_run_writes(both_runs: dict, uri_run: tuple, inputs: Path) -> None:
    (local_out, local), (out, on_ray) = both_runs["local"], uri_run
    assert on_ray.returncode == 1, on_ray.stderr  # the broken file

    def named_by_uri(ra: dict, rb: dict) -> None:
        assert rb["source"] == ra["source"].replace(str(inputs), inputs.as_uri())  # the URI the input came from
        rb["source"] = ra["source"]
        if rb.get("alignment"):
            assert rb["alignment"]["source"] == rb["source"].replace(str(inputs), inputs.as_uri())
            rb["alignment"]["source"] = ra["alignment"]["source"]

    assert_same_outputs(local_out, out, named_by_uri)
    expected = {inputs.as_uri() + "/" + Path(k).name: {**r, "input": inputs.as_uri() + "/" + Path(k).name}
                for k, r in reports(local.stdout, local_out).items()}
    for record in expected.values():
        record["error"] = record["error"] and record["error"].replace(str(inputs) + "/", inputs.as_uri() + "/")
    assert uri_reports(on_ray.stdout, out.as_uri()) == expected
    errors = [line for line in on_ray.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {inputs.as_uri()}/broken.jpg: not an image (unrecognised format)"]
    assert on_ray.stderr.splitlines()[-1].startswith("3 done, 1 failed; ")
    assert not [p for p in out.rglob(".*")]  # no temporaries left


def test_uri_rerun_skips_what_is_done(uri_run: tuple, inputs: Path, small_ckpt: Path, small_directions: Path) -> None:
    out = uri_run[0]
    before = {name: (out / name).stat().st_mtime_ns for name in files(out)}
    again = run_cli(*edit_args(small_ckpt, small_directions, inputs.as_uri(), out.as_uri(), "--ray"))
    assert again.returncode == 1, again.stderr
    status = {r["input"]: r["status"] for r in map(json.loads, again.stdout.splitlines())}
    done = ("00044.jpg", "00051.jpg", "astronaut.png")
    assert status == {f"{inputs.as_uri()}/{name}": "skipped" for name in done} | {
        f"{inputs.as_uri()}/broken.jpg": "error"}
    assert {name: (out / name).stat().st_mtime_ns for name in files(out)} == before


def test_uri_inputs_are_laid_out_as_local_ones(tmp_path: Path) -> None:
    """Listing under a URI: images and .pt files, recursively, sorted; a file
    -> its name, a folder -> the path inside it (under its name when several are given)."""
    from hfgi_cli import remote

    for folder in ("a", "a/sub", "b"):
        (tmp_path / folder).mkdir()
    for name in ("a/x.jpg", "a/sub/y.PNG", "a/z.pt", "a/notes.txt", "a/.x.jpg.1234abcd.part", "b/x.jpg", "b/x.png"):
        (tmp_path / name).write_bytes(b"")
    kind, found = remote.list_uri((tmp_path / "a").as_uri(), frozenset({".jpg", ".png", ".pt"}))
    assert kind == "folder" and [str(rel) for _, rel in found] == ["sub/y.PNG", "x.jpg", "z.pt"]
    assert found[1][0] == (tmp_path / "a" / "x.jpg").as_uri()
    assert remote.list_uri((tmp_path / "nothing").as_uri(), frozenset({".jpg"})) == ("missing", [])
    for args in (["a"], ["a", "b"], ["a/x.jpg", "b/x.jpg", "b/x.png"], ["a", "b/x.jpg"]):
        local, _ = collect_inputs([str(tmp_path / arg) for arg in args])
        uris, problems = collect_inputs([(tmp_path / arg).as_uri() for arg in args], uris=True)
        assert not problems
        assert [i.rel for i in uris] == [i.rel for i in local], args
        assert [i.uri for i in uris] == [i.path.as_uri() for i in local]
        assert [i.source for i in uris] == [i.uri for i in uris] and [i.is_latent for i in uris] == [
            i.is_latent for i in local]
    items, problems = collect_inputs([(tmp_path / "a").as_uri()], exclude=(tmp_path / "a" / "sub").as_uri(),
                                     uris=True)
    assert [str(i.rel) for i in items] == ["x", "z"] and not problems
    sub = tmp_path / "a" / "sub"
    for arg, out in ((tmp_path / "a", sub.as_uri()), ((tmp_path / "a").as_uri(), sub)):
        items, _ = collect_inputs([str(arg)], exclude=out, uris=True)  # OUT as a path or a file:// URI
        assert [str(i.rel) for i in items] == ["x", "z"]
    _, problems = collect_inputs([(tmp_path / "none").as_uri(), "nosuch://x/y"], uris=True)
    assert [p.path for p in problems] == [(tmp_path / "none").as_uri(), "nosuch://x/y"]
    assert problems[0].endswith("no such file or folder") and "cannot be read" in problems[1]


def test_failed_upload_fails_its_input_alone(tmp_path: Path) -> None:
    """The write stage uploads in the order the pipeline wrote; an upload that fails fails its input
    (one message naming it), keeps what was uploaded before it listed, and leaves no staged file."""
    from hfgi_cli import remote
    from hfgi_cli.inputs import InputItem
    from hfgi_cli.ray import _upload

    class Flaky(remote.Folder):
        def upload(self, local: Path, rel: str) -> str:
            if rel.endswith(".jpg"):
                raise OSError("bucket is read-only")
            return super().upload(local, rel)

    staging, out = tmp_path / "staging", tmp_path / "out"
    (staging / "sub").mkdir(parents=True)
    written = [staging / "sub" / "x_0.pt", staging / "sub" / "x.jpg"]
    for path in written:
        path.write_bytes(b"data")
    job = Job(InputItem(Path("bucket/in/sub/x.jpg"), Path("sub/x"), "s3://bucket/in/sub/x.jpg"), status="ok",
              outputs=[str(p) for p in written])
    _upload(job, staging, Flaky(out.as_uri()))
    assert job.status == "error" and job.error == "s3://bucket/in/sub/x.jpg: cannot write output (bucket is read-only)"
    assert job.outputs == [(out / "sub" / "x_0.pt").as_uri()] and (out / "sub" / "x_0.pt").read_bytes() == b"data"
    assert files(out) == ["sub/x_0.pt"] and files(staging) == []


class PidFileHFGIEdit(HFGIEdit):
    """The model stage, except that the first actor to get a batch writes its pid and waits there to
    be killed; the actor Ray starts in its place finds the file and works normally."""

    pid_file: Path

    def __call__(self, batch):  # type: ignore[no-untyped-def]
        if not self.pid_file.exists():
            self.pid_file.write_text(str(os.getpid()))
            deadline = time.monotonic() + 120  # a bound, should the test fail to kill it
            while time.monotonic() < deadline:
                time.sleep(0.1)
        return super().__call__(batch)


def test_killed_model_actor_is_restarted_and_the_run_completes(ray_cluster: None, small_ckpt: Path,
                                                               tmp_path: Path) -> None:
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for face in sorted(FACES.glob("*.jpg"))[:4]:
        shutil.copy(face, src / face.name)
    pid_file = tmp_path / "actor.pid"
    stage = type("KillMe", (PidFileHFGIEdit,), {"pid_file": pid_file})
    model = load_model(small_ckpt, device="cpu")
    items, _ = collect_inputs([str(src)])
    killed: list[int] = []

    def kill_when_busy() -> None:
        deadline = time.monotonic() + 180
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # the pid is written before the file is closed
        pid = int(pid_file.read_text())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    killer = threading.Thread(target=kill_when_busy, daemon=True)
    killer.start()
    done: list[Job] = []
    summary = run_on_ray(model, RunOptions(out, [], aligned=True), items, done.append,
                         model_args={"checkpoint": small_ckpt, "device": "cpu"}, model_stage=stage)
    killer.join(timeout=5)
    assert killed, "the model actor never started"
    assert summary.exit_code == 0 and sorted(j.status for j in done) == ["ok"] * 4
    images = assert_outputs_valid(out)  # every image opens, every latent loads, no temporaries
    assert sorted(p.stem for p in images) == sorted(i.rel.name for i in items)


def test_hfgi_edit_stage_on_raw_image_bytes(ray_cluster: None, inputs: Path, small_ckpt: Path,
                                             small_directions: Path) -> None:
    """For one's own Ray jobs: read_binary_files -> HFGIEdit gives what Model.edit gives."""
    from ray.data import ActorPoolStrategy

    paths = [str(inputs / "00044.jpg"), str(inputs / "broken.jpg")]
    dataset = ray.data.read_binary_files(paths, include_paths=True).map_batches(
        HFGIEdit, batch_size=2, compute=ActorPoolStrategy(size=1), num_cpus=1,
        fn_constructor_kwargs=dict(checkpoint=str(small_ckpt), edits={"smile": 2}, device="cpu",
                                   directions=str(small_directions)),
    )
    rows = {Path(r["path"]).name: r for r in dataset.take_all()}
    assert rows["broken.jpg"]["faces"] == 0 and "broken.jpg" in rows["broken.jpg"]["error"]
    good = rows["00044.jpg"]
    expected = load_model(small_ckpt, device="cpu", directions=small_directions).edit(inputs / "00044.jpg",
                                                                                      {"smile": 2})
    assert good["error"] == "" and good["faces"] == 1
    got = Image.open(__import__("io").BytesIO(good["image_smile+2"]))
    assert np.array_equal(np.asarray(got), np.asarray(expected.images["smile+2"]))
    assert np.array_equal(good["latent"][0], expected.faces[0].latent.numpy())


def test_pools_follow_the_cluster() -> None:
    two_cores = plan_pools({"CPU": 2.0}, "auto", None, None)
    assert (two_cores.actors, two_cores.cpus_per_actor, two_cores.cpu_tasks, two_cores.device) == (1, 1, 1, "cpu")
    assert two_cores.batch_size == 1  # as on one machine: the same floating point
    gpus = plan_pools({"CPU": 32.0, "GPU": 4.0}, "auto", None, None)
    assert (gpus.actors, gpus.gpus_per_actor, gpus.cpu_tasks, gpus.device, gpus.batch_size) == (4, 1, 28, "cuda", 8)
    assert plan_pools({"CPU": 32.0, "GPU": 4.0}, "cpu", None, None).device == "cpu"
    big_cpu = plan_pools({"CPU": 64.0}, "auto", None, None)
    assert big_cpu.actors * big_cpu.cpus_per_actor <= 32 and big_cpu.cpu_tasks >= 32
    one_core = plan_pools({"CPU": 1.0}, "auto", None, None)  # the actor and a task fit at once
    assert one_core.cpus_per_actor + one_core.cpus_per_task <= 1
    all_gpu = plan_pools({"CPU": 2.0, "GPU": 2.0}, "auto", None, None)
    assert all_gpu.cpus_per_actor == 0 and all_gpu.cpu_tasks == 2
    with pytest.raises(ValueError, match="no GPU"):
        plan_pools({"CPU": 8.0}, "cuda", None, None)


def test_ray_without_the_extra_is_a_usage_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    result = run_cli("invert", str(FACES / "00044.jpg"), "-o", str(tmp_path), "--ray")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --ray needs Ray: pip install 'hfgi-cli[ray]'"


def test_ray_usage_errors_exit_2(ray_cluster: None, small_ckpt: Path, tmp_path: Path) -> None:
    face = str(FACES / "00044.jpg")
    alone = run_cli("invert", face, "-o", str(tmp_path), "--workers", "2", "--checkpoint", str(small_ckpt))
    assert alone.returncode == 2 and "--ray-address and --workers go with --ray" in alone.stderr
    no_gpu = run_cli("invert", face, "-o", str(tmp_path), "--ray", "--device", "cuda", "--checkpoint", str(small_ckpt))
    assert no_gpu.returncode == 2 and "the Ray cluster has no GPU" in no_gpu.stderr
    store = run_cli("invert", "s3://bucket/photos", "-o", str(tmp_path), "--checkpoint", str(small_ckpt))
    assert store.returncode == 2 and store.stderr.strip() == (
        "error: s3://bucket/photos: URIs (s3://, gs://, file://...) can be used with --ray only")
    bad_out = run_cli("invert", face, "-o", "nosuch://bucket/out", "--ray", "--checkpoint", str(small_ckpt))
    assert bad_out.returncode == 2 and bad_out.stderr.startswith("error: -o nosuch://bucket/out: ")
    assert len(bad_out.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_importing_the_cli_does_not_import_ray() -> None:
    code = "import sys, hfgi_cli, hfgi_cli.cli; assert 'ray' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
