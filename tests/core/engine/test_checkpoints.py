"""Model registry, architectures, secure loading, downloads and device choice."""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import pytest
import torch
from segment_anything import sam_model_registry

from napari_active_sam.core.engine.architectures import (
    ARCHITECTURES,
    NAMED_ARCHITECTURES,
    Architecture,
)
from napari_active_sam.core.engine.checkpoints import (
    CHECKPOINT_FORMAT,
    ModelRef,
    load_checkpoint,
    load_model,
    random_model,
)
from napari_active_sam.core.engine.device import DEVICE_ENV, choose_device
from napari_active_sam.core.engine.downloads import CACHE_ENV, cache_dir, fetch_checkpoint
from napari_active_sam.core.engine.registry import MODELS, ModelSpec, get_spec
from napari_active_sam.core.enums import ModelName
from napari_active_sam.core.errors import (
    CheckpointError,
    DownloadError,
    ModelError,
    ModelNotAvailableError,
)

# ---------------------------------------------------------------------------- registry


def test_registry_has_official_models_with_hashes_and_licenses():
    for name in ("vit_b", "vit_l", "vit_h", "medsam"):
        spec = get_spec(name)
        assert spec.url.startswith("https://")
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.size_bytes > 300_000_000
        assert spec.license
        assert spec.architecture in ARCHITECTURES
    assert get_spec("vit_b").filename == "sam_vit_b_01ec64.pth"
    assert get_spec("medsam").architecture == "vit_b"
    assert {m.value for m in ModelName} == {
        "vit_b", "vit_l", "vit_h", "medsam", "demo", "sam2.1_hiera_t", "sam2.1_hiera_s",
        "sam2.1_hiera_b+", "sam2.1_hiera_l", "medsam2",
    }  # fmt: skip
    assert len({spec.sha256 for spec in MODELS.values() if spec.sha256}) == 9


def test_registry_has_the_sam2_family_with_hashes_and_their_architectures():
    for name in ("sam2.1_hiera_t", "sam2.1_hiera_s", "sam2.1_hiera_b+", "sam2.1_hiera_l"):
        spec = get_spec(name)
        assert spec.url == (
            f"https://dl.fbaipublicfiles.com/segment_anything_2/092824/{spec.filename}"
        )
        assert len(spec.sha256) == 64 and spec.size_bytes > 150_000_000
        assert spec.architecture == name in NAMED_ARCHITECTURES
    medsam2 = get_spec("medsam2")
    assert medsam2.filename == "MedSAM2_latest.pt" and len(medsam2.sha256) == 64
    assert NAMED_ARCHITECTURES[medsam2.architecture].img_size == 512
    assert "CC-BY-SA-4.0" in medsam2.license


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ModelError, match="vit_b, vit_l, vit_h, medsam, sam2.1_hiera_t"):
        get_spec("vit_x")


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_architectures_match_segment_anything_official_layout(name):
    # Built on the meta device: identical keys and shapes mean official checkpoints fit.
    with torch.device("meta"):
        official = sam_model_registry[name]().state_dict()
        ours = ARCHITECTURES[name].build().state_dict()
    assert list(ours) == list(official)
    assert all(ours[k].shape == official[k].shape for k in ours)


def test_official_format_vit_b_checkpoint_loads_with_random_weights(tmp_path):
    # The official files are bare state dicts; MedSAM's too.
    sam = sam_model_registry["vit_b"]()
    path = tmp_path / "sam_vit_b_random.pth"
    torch.save(sam.state_dict(), path)
    for name in ("vit_b", "medsam"):
        model = load_model(name, checkpoint=path, device="cpu")
        assert model.architecture.name == "vit_b"
        key = "image_encoder.blocks.0.attn.qkv.weight"
        assert torch.equal(model.sam.state_dict()[key], sam.state_dict()[key])
        assert model.name == name


def test_demo_model_is_reported_unavailable_until_shipped():
    spec = get_spec("demo")
    assert spec.bundled and not spec.url
    from napari_active_sam.core.engine.downloads import bundled_path

    if bundled_path(spec.bundled).is_file():
        assert load_model("demo", device="cpu").name == "demo"
    else:
        with pytest.raises(ModelNotAvailableError, match="not yet available"):
            load_model("demo")


# ---------------------------------------------------------------------------- loading


def test_project_checkpoint_round_trip_carries_its_architecture(tiny_checkpoint, tiny_model):
    model = load_checkpoint(tiny_checkpoint, device="cpu")
    assert model.architecture == tiny_model.architecture
    for key, value in tiny_model.sam.state_dict().items():
        assert torch.equal(model.sam.state_dict()[key], value)
    assert model.weights_sha256 == hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    assert ModelRef("tiny", str(tiny_checkpoint)).model_id() == model.model_id


def test_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("these are not weights")
    with pytest.raises(CheckpointError, match="could not be read as a PyTorch checkpoint"):
        load_checkpoint(path, "vit_b")


def test_a_companion_file_given_as_the_model_says_what_it_is():
    """The demo model's Bayesian head passed where its checkpoint belongs: the error names
    the file a head, not "name an architecture"."""
    from napari_active_sam.core.engine.downloads import bundled_path

    with pytest.raises(CheckpointError, match=r"is a head file \(for model demo@.*not a model"):
        load_checkpoint(bundled_path("demo_model.head.pt"), "demo")


def test_truncated_checkpoint(tmp_path, tiny_checkpoint):
    data = tiny_checkpoint.read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(path)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing.pth", "vit_b")


@pytest.mark.parametrize("where", ["nothing.pth", "."])
def test_load_model_of_a_checkpoint_that_is_no_file(tmp_path, where):
    from napari_active_sam.core.engine.checkpoints import load_model

    with pytest.raises(CheckpointError, match="is not a file: choose the model's checkpoint"):
        load_model("vit_b", tmp_path / where)


def test_checkpoint_for_another_architecture_names_expected_and_keys(tmp_path, tiny_model):
    path = tmp_path / "tiny_bare.pth"
    torch.save(tiny_model.sam.state_dict(), path)
    with pytest.raises(CheckpointError, match="'vit_b' architecture") as info:
        load_checkpoint(path, "vit_b")
    assert "missing keys" in str(info.value) and "unexpected keys" in str(info.value)


def test_checkpoint_with_other_shapes_names_the_key(tmp_path, tiny_arch):
    wider = Architecture(**{**tiny_arch.to_dict(), "encoder_embed_dim": 64, "name": "wider"})
    wider = Architecture.from_dict(wider.to_dict())
    path = tmp_path / "wider.pth"
    torch.save(random_model(wider).sam.state_dict(), path)
    with pytest.raises(CheckpointError, match="has shape"):
        load_checkpoint(path, tiny_arch)


class _Payload:
    """Unpickling this runs a shell command that writes ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'echo unpickled > "{self.marker}"',)


def test_pickled_code_is_refused_in_plain_words_and_never_run(tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "evil.pth"
    torch.save({"weights": _Payload(marker)}, path)
    partial = tmp_path / "partial.pth"
    torch.save({"weights": functools.partial(print, "side effect")}, partial)
    for load, file in [
        (lambda: load_checkpoint(path, "vit_b"), path),
        (lambda: load_model("vit_b", checkpoint=path), path),
        (lambda: load_checkpoint(partial), partial),
    ]:
        with pytest.raises(CheckpointError) as info:
            load()
        message = str(info.value)
        assert message.startswith(f"{file} holds Python objects beyond tensors (")
        assert "napari-active-sam does not load such files" in message
        assert "\x1b" not in message and "weights_only" not in message
        assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "Download it again from a trusted source, or re-save it with save_checkpoint" in str(
        pytest.raises(CheckpointError, load_checkpoint, path).value
    )
    assert not marker.exists()
    torch.load(path, weights_only=False)  # the file is really dangerous
    assert marker.exists()


def test_damaged_pickle_is_not_called_python_objects(tmp_path):
    path = tmp_path / "noise.pth"
    path.write_bytes(b"\x80\x02" + bytes(range(256)) * 4)
    with pytest.raises(CheckpointError, match="not a valid pickle") as info:
        load_checkpoint(path, "vit_b")
    assert "weights_only" not in str(info.value) and "Python objects" not in str(info.value)


# ------------------------------------------------------------ architectures stored in files


def _project_file(path, architecture, state):
    """A file in this project's format, whatever its architecture entry holds."""
    torch.save({"format": CHECKPOINT_FORMAT, "architecture": architecture, "state_dict": state},
               path)  # fmt: skip
    return path


@pytest.fixture
def real_builds(monkeypatch):
    """Names of the architectures built for real (not on the meta device) during a test."""
    built = []
    build = Architecture.build

    def spy(self):
        if torch.empty(()).device.type != "meta":
            built.append(self.name)
        return build(self)

    monkeypatch.setattr(Architecture, "build", spy)
    return built


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (lambda d: d.pop("encoder_depth"), "encoder_depth"),
        (lambda d: d.update(encoder_num_heads=0), "encoder_num_heads"),
        (lambda d: d.update(img_size=-128), "img_size"),
        (lambda d: d.update(patch_size="16"), "patch_size"),
        (lambda d: d.update(decoder_depth=None), "decoder_depth"),
        (lambda d: d.update(colour="red"), "colour"),
    ],
)
def test_stored_architecture_with_a_bad_field_names_file_and_field(
    tmp_path, tiny_model, real_builds, change, field
):
    arch = tiny_model.architecture.to_dict()
    change(arch)
    path = _project_file(tmp_path / "odd.pt", arch, tiny_model.sam.state_dict())
    with pytest.raises(CheckpointError, match=field) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(f"{path} is for an architecture")
    assert "re-save it with save_checkpoint" in str(info.value)
    assert real_builds == []


def test_stored_architecture_that_is_not_a_dict(tmp_path, tiny_model):
    path = _project_file(tmp_path / "odd.pt", "vit_b", tiny_model.sam.state_dict())
    with pytest.raises(CheckpointError, match="must be a dict, not str"):
        load_checkpoint(path)


def test_oversized_stored_architecture_is_refused_before_building(tmp_path, real_builds):
    arch = {**ARCHITECTURES["vit_h"].to_dict(), "name": "wide", "encoder_embed_dim": 4096,
            "encoder_depth": 8, "encoder_global_attn_indexes": [7]}  # fmt: skip
    path = _project_file(tmp_path / "wide.pt", arch, {"x": torch.zeros(1)})
    assert path.stat().st_size < 4096
    with pytest.raises(CheckpointError, match="1,637 million parameters, more than the 1,000"):
        load_checkpoint(path)
    assert real_builds == []


def test_checkpoint_for_another_architecture_is_refused_before_building_it(
    tmp_path, tiny_checkpoint, real_builds
):
    with pytest.raises(CheckpointError, match="does not fit the 'vit_h' architecture") as info:
        load_model("vit_h", checkpoint=tiny_checkpoint, device="cpu")
    assert (
        "It names its own architecture ('tiny'): choose that one, or name none"
        in str(info.value)
    )
    assert real_builds == []


def test_mismatch_names_the_official_architecture_the_file_fits(tmp_path, real_builds):
    # Stride-0 tensors: a file of a few kilobytes with every key and shape of ViT-B.
    shapes = ARCHITECTURES["vit_b"].state_shapes()
    path = tmp_path / "sam_vit_b.pth"
    torch.save({k: torch.zeros(1).expand(shape) for k, shape in shapes.items()}, path)
    assert path.stat().st_size < 1_000_000
    with pytest.raises(CheckpointError, match="It is a vit_b checkpoint: choose vit_b"):
        load_model("vit_l", checkpoint=path, device="cpu")
    assert real_builds == []


def test_refusals_allocate_no_network(tmp_path, tiny_checkpoint):
    """In a fresh process, refusing an oversized or mismatched file stays small in memory."""
    status = Path("/proc/self/status")
    if not status.is_file() or "VmHWM" not in status.read_text():
        pytest.skip("needs Linux's peak resident memory (VmHWM)")
    arch = {**ARCHITECTURES["vit_h"].to_dict(), "name": "wide", "encoder_embed_dim": 4096,
            "encoder_depth": 8, "encoder_global_attn_indexes": [7]}  # fmt: skip
    wide = _project_file(tmp_path / "wide.pt", arch, {"x": torch.zeros(1)})
    # VmHWM is the peak of this process alone (ru_maxrss would include the parent's).
    script = textwrap.dedent(
        f"""
        import re
        from napari_active_sam.core.engine.checkpoints import load_checkpoint, load_model
        from napari_active_sam.core.errors import CheckpointError

        def peak():
            status = open("/proc/self/status").read()
            return int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) * 1024

        start = peak()
        for load in (lambda: load_checkpoint({str(wide)!r}),
                     lambda: load_model("vit_h", checkpoint={str(tiny_checkpoint)!r})):
            try:
                load()
            except CheckpointError:
                pass
        print(peak() - start)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=True)  # fmt: skip
    assert int(done.stdout.strip()) < 200 * 2**20  # ViT-H alone would be 2.5 GB


def test_checkpoint_without_architecture_asks_for_one(tmp_path, tiny_model):
    path = tmp_path / "bare.pth"
    torch.save(tiny_model.sam.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not say which architecture"):
        load_checkpoint(path)


# ---------------------------------------------------------------------------- downloads


@pytest.fixture
def http_root(tmp_path):
    """A real HTTP server on the loopback interface serving a temporary folder."""
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _spec(url: str, sha256: str) -> ModelSpec:
    return ModelSpec(
        name="tiny", title="Tiny test SAM", architecture="tiny", license="test",
        description="", url=url, sha256=sha256,
    )  # fmt: skip


def test_download_verifies_hash_reports_progress_and_loads(http_root, tmp_path, tiny_checkpoint):
    root, base = http_root
    (root / "tiny.pt").write_bytes(tiny_checkpoint.read_bytes())
    sha = hashlib.sha256(tiny_checkpoint.read_bytes()).hexdigest()
    steps = []
    cache = tmp_path / "cache"
    path = fetch_checkpoint(_spec(f"{base}/tiny.pt", sha), cache, progress=steps.append)
    assert path.parent == cache and path.read_bytes() == tiny_checkpoint.read_bytes()
    assert steps and steps[-1].done == steps[-1].total == path.stat().st_size
    model = load_checkpoint(path, device="cpu", sha256=sha)
    assert model.architecture.name == "tiny"


def test_corrupted_download_is_deleted_and_raises(http_root, tmp_path, tiny_checkpoint):
    root, base = http_root
    good = tiny_checkpoint.read_bytes()
    sha = hashlib.sha256(good).hexdigest()
    corrupted = bytearray(good)
    corrupted[len(corrupted) // 2] ^= 0xFF
    (root / "tiny.pt").write_bytes(bytes(corrupted))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError, match="does not match its published SHA-256"):
        fetch_checkpoint(_spec(f"{base}/tiny.pt", sha), cache)
    assert not any(cache.iterdir())


def test_wrong_published_hash_deletes_the_file(http_root, tmp_path, tiny_checkpoint):
    root, base = http_root
    (root / "tiny.pt").write_bytes(tiny_checkpoint.read_bytes())
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError):
        fetch_checkpoint(_spec(f"{base}/tiny.pt", "0" * 64), cache)
    assert not (cache / "tiny.pt").exists()


def test_corrupted_cached_file_is_downloaded_again(http_root, tmp_path, tiny_checkpoint):
    root, base = http_root
    good = tiny_checkpoint.read_bytes()
    (root / "tiny.pt").write_bytes(good)
    spec = _spec(f"{base}/tiny.pt", hashlib.sha256(good).hexdigest())
    cache = tmp_path / "cache"
    path = fetch_checkpoint(spec, cache)
    path.write_bytes(good[:100])
    assert fetch_checkpoint(spec, cache).read_bytes() == good


def test_missing_file_on_server_raises_download_error(http_root, tmp_path):
    _, base = http_root
    with pytest.raises(DownloadError, match="Could not download"):
        fetch_checkpoint(_spec(f"{base}/absent.pt", "0" * 64), tmp_path / "cache")


def test_unwritable_cache_falls_back_to_a_temporary_folder(http_root, tmp_path, tiny_checkpoint,
                                                           monkeypatch):  # fmt: skip
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    root, base = http_root
    good = tiny_checkpoint.read_bytes()
    (root / "tiny.pt").write_bytes(good)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    unwritable = blocker / "cache"  # a folder below a file cannot exist, even for root
    with pytest.warns(RuntimeWarning, match="not writable"):
        path = fetch_checkpoint(_spec(f"{base}/tiny.pt", hashlib.sha256(good).hexdigest()),
                                unwritable)  # fmt: skip
    assert path.read_bytes() == good and not unwritable.exists()
    (root / "tiny.pt").unlink()  # a second load finds the first download: one folder, reused
    with pytest.warns(RuntimeWarning, match="not writable"):
        again = fetch_checkpoint(_spec(f"{base}/tiny.pt", hashlib.sha256(good).hexdigest()),
                                 unwritable)  # fmt: skip
    assert again == path and len(list((tmp_path / "tmp").iterdir())) == 1


def test_cache_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "models"))
    assert cache_dir() == tmp_path / "models"
    monkeypatch.delenv(CACHE_ENV)
    assert "napari-active-sam" in str(cache_dir())


# ---------------------------------------------------------------------------- devices


def test_device_choice(monkeypatch):
    monkeypatch.delenv(DEVICE_ENV, raising=False)
    expected = "cuda" if torch.cuda.is_available() else None
    auto = choose_device()
    if expected:
        assert auto.type == "cuda"
    else:
        assert auto.type in ("mps", "cpu")
    assert choose_device("cpu") == torch.device("cpu")
    monkeypatch.setenv(DEVICE_ENV, "cpu")
    assert choose_device() == torch.device("cpu")
    with pytest.raises(ModelError, match="Unknown device"):
        choose_device("tpu7")


def test_unavailable_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        assert choose_device("cuda").type == "cuda"
        with pytest.raises(ModelError, match="GPU"):
            choose_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(ModelError, match="no CUDA GPU"):
            choose_device("cuda")


def test_no_warning_from_loading(tiny_checkpoint):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_checkpoint(tiny_checkpoint, device="cpu")



@pytest.mark.parametrize("state", [None, [1, 2], "weights"])
def test_a_project_checkpoint_without_a_state_dict_is_damaged(tmp_path, state):
    from napari_active_sam.core.engine.checkpoints import CHECKPOINT_FORMAT, read_checkpoint

    path = tmp_path / "broken.pt"
    payload = {"format": CHECKPOINT_FORMAT, "architecture": {}}
    if state is not None:
        payload["state_dict"] = state
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="no state dict of weights"):
        read_checkpoint(path)
