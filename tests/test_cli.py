"""``m2ae deblur``: files and folders in, results out, clean failures, inputs never touched."""
import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import randomize_
from m2ae_core import build_model, save_weights
from m2ae_core.cli import main
from m2ae_core.tiling import tile_grid


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("w") / "tiny.safetensors"
    save_weights(randomize_(build_model("small", width=8), seed=1), path)
    return path


def write_photo(path, size=(48, 40), mode="RGB"):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).convert(mode).save(path)
    return path


def test_single_file_with_mask_and_trajectory(tmp_path, weights, capsys):
    src = write_photo(tmp_path / "in.jpg")
    out = tmp_path / "out" / "restored.png"
    code = main(["deblur", str(src), "-o", str(out), "--weights", str(weights),
                 "--save-mask", "--save-trajectory"])
    assert code == 0
    assert Image.open(out).size == (48, 40)
    mask = np.asarray(Image.open(tmp_path / "out" / "restored_mask.png"))
    assert mask.shape == (40, 48) and set(np.unique(mask)) <= {0, 255}
    assert Image.open(tmp_path / "out" / "restored_trajectory.png").size == (48, 40)
    assert "processed" in capsys.readouterr().out


def test_tile_context_reaches_deblur(tmp_path, weights):
    src = write_photo(tmp_path / "in.png", size=(200, 150))
    outputs = {}
    for context in ("image", "tile"):
        out = tmp_path / f"{context}.png"
        assert main(["deblur", str(src), "-o", str(out), "--weights", str(weights),
                     "--tile", "96", "--tile-context", context]) == 0
        outputs[context] = np.asarray(Image.open(out))
    assert not np.array_equal(outputs["image"], outputs["tile"])
    with pytest.raises(SystemExit):
        main(["deblur", str(src), "-o", str(tmp_path / "x.png"), "--tile-context", "whole"])


def test_ensemble_reaches_deblur(tmp_path, weights, capsys):
    from m2ae_core import deblur, imageio, load_model

    src = write_photo(tmp_path / "in.png", size=(64, 48))
    out = tmp_path / "x8.png"
    assert main(["deblur", str(src), "-o", str(out), "--weights", str(weights),
                 "--ensemble", "8"]) == 0
    assert "self-ensemble of 8" in capsys.readouterr().out
    expected = deblur(load_model(weights, dtype="auto"), imageio.read_image(src), ensemble=8).image
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(expected))
    assert main(["deblur", str(src), "-o", str(tmp_path / "x1.png"), "--weights", str(weights)]) == 0
    assert not np.array_equal(np.asarray(Image.open(tmp_path / "x1.png")), np.asarray(expected))
    with pytest.raises(SystemExit):
        main(["deblur", str(src), "-o", str(tmp_path / "x3.png"), "--ensemble", "3"])


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_moves_with_the_tiles_of_a_big_input(tmp_path, weights, monkeypatch):
    src = write_photo(tmp_path / "in.png", size=(200, 150))
    tiles = len(tile_grid(150, 200, 96))
    assert tiles > 1
    # one pass per tile with per-tile context, two with the whole image's (the default);
    # a self-ensemble runs them for every view
    cases = (("tile", ["--tile", "96", "--tile-context", "tile"], tiles),
             ("image", ["--tile", "96"], 2 * tiles),
             ("ensemble", ["--tile", "96", "--tile-context", "tile", "--ensemble", "2"], 2 * tiles),
             ("untiled-ensemble", ["--tile", "0", "--ensemble", "4"], 4))
    for name, options, steps in cases:
        terminal = _Terminal()
        monkeypatch.setattr(sys, "stderr", terminal)
        assert main(["deblur", str(src), "-o", str(tmp_path / f"{name}.png"),
                     "--weights", str(weights), *options]) == 0
        frames = terminal.getvalue().split("\r")
        # every step is reported while the photo is under way, then the photo counts as done
        notes = [f for f in frames if "in.png step" in f]
        assert [f.split("step ")[1].split()[0] for f in notes] == [
            f"{k}/{steps}" for k in range(1, steps + 1)], name
        assert all(" 0/1 " in f for f in notes[:-1])
        assert " 1/1 " in frames[-1]


def test_folder_of_inputs_and_a_bad_file(tmp_path, weights, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    write_photo(folder / "a.png")
    write_photo(folder / "b.png", mode="L")
    good = (folder / "a.png").read_bytes()
    (folder / "c.png").write_bytes(good[: len(good) // 2])  # truncated
    code = main(["deblur", str(folder), "-o", str(tmp_path / "out"), "--weights", str(weights)])
    assert code == 1
    err = capsys.readouterr().err
    assert "c.png" in err and "Traceback" not in err
    assert (tmp_path / "out" / "a.png").exists()
    assert Image.open(tmp_path / "out" / "b.png").mode == "L"
    assert not (tmp_path / "out" / "c.png").exists()
    assert (folder / "a.png").read_bytes() == good


def test_sixteen_bit_png_stays_sixteen_bit(tmp_path, weights):
    arr = (np.random.default_rng(1).integers(0, 65535, (20, 30))).astype(np.uint16)
    src = tmp_path / "deep.png"
    Image.fromarray(arr).save(src)
    assert main(["deblur", str(src), "-o", str(tmp_path / "o.png"), "--weights", str(weights)]) == 0
    out = np.asarray(Image.open(tmp_path / "o.png"))
    assert out.dtype in (np.uint16, np.int32) and out.max() > 255


def _srgb_profile() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def test_colour_profile_and_exif_are_kept_and_orientation_reset(tmp_path, weights):
    profile = _srgb_profile()
    exif = Image.Exif()
    exif[0x010F] = "M2AE test camera"  # Make
    exif[0x0112] = 6  # stored sideways: shown turned a quarter clockwise
    src = tmp_path / "phone.jpg"
    rng = np.random.default_rng(2)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        src, icc_profile=profile, exif=exif)
    for out in (tmp_path / "o.png", tmp_path / "o.jpg", tmp_path / "o.tif"):
        assert main(["deblur", str(src), "-o", str(out), "--weights", str(weights)]) == 0
        with Image.open(out) as restored:
            assert restored.size == (40, 48)  # upright: the orientation was applied...
            assert restored.info.get("icc_profile") == profile
            kept = restored.getexif()
            assert kept.get(0x010F) == "M2AE test camera"
            assert kept.get(0x0112, 1) == 1  # ...so the copy must not turn it again


def test_sixteen_bit_png_keeps_its_colour_profile(tmp_path, weights):
    from m2ae_core import png16

    profile = _srgb_profile()
    arr = np.random.default_rng(3).integers(0, 65535, (20, 30, 3)).astype(np.uint16)
    src = tmp_path / "deep.png"
    with open(src, "wb") as fh:
        png16.encode_png(arr, fh, extra_chunks=[
            (b"iCCP", b"ICC Profile\x00\x00" + __import__("zlib").compress(profile))])
    assert Image.open(src).info.get("icc_profile") == profile  # Pillow reads our chunk
    assert main(["deblur", str(src), "-o", str(tmp_path / "o.png"), "--weights", str(weights)]) == 0
    from m2ae_core.imageio import read_image

    out = read_image(tmp_path / "o.png")
    assert out.dtype == np.uint16 and out.shape == (20, 30, 3)
    assert Image.open(tmp_path / "o.png").info.get("icc_profile") == profile


def test_a_profile_of_another_colour_space_is_not_attached(tmp_path):
    from m2ae_core.imageio import save_image
    from m2ae_core.photo_metadata import PhotoMetadata, icc_colour_space

    def fake_profile(space: bytes) -> bytes:  # only the header field the check reads
        return bytes(16) + space + bytes(108)

    assert icc_colour_space(fake_profile(b"CMYK")) == "CMYK"
    rgb = np.zeros((8, 8, 3), np.uint8)
    for space, kept in ((b"CMYK", False), (b"GRAY", False), (b"RGB ", True)):
        path = tmp_path / f"{space.strip().decode()}.png"
        save_image(rgb, path, metadata=PhotoMetadata(icc_profile=fake_profile(space)))
        assert ("icc_profile" in Image.open(path).info) is kept
    grey = tmp_path / "grey.png"
    save_image(rgb[..., 0], grey, metadata=PhotoMetadata(icc_profile=fake_profile(b"GRAY")))
    assert Image.open(grey).info.get("icc_profile") == fake_profile(b"GRAY")


def test_unreadable_metadata_does_not_stop_a_readable_photo(tmp_path, monkeypatch):
    from m2ae_core import photo_metadata

    src = write_photo(tmp_path / "in.png")

    def broken(self):
        raise ValueError("corrupt EXIF")

    monkeypatch.setattr(Image.Image, "getexif", broken)
    with pytest.warns(UserWarning, match="could not be read"):
        assert not photo_metadata.read_metadata(src)


def test_heic_photos_from_a_phone_folder(tmp_path, weights):
    pillow_heif = pytest.importorskip("pillow_heif")  # in the test extra; CI has it
    pillow_heif.register_heif_opener()
    profile = _srgb_profile()
    photos = tmp_path / "phone"
    photos.mkdir()
    rng = np.random.default_rng(4)
    Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(
        photos / "IMG_0001.HEIC", quality=95, icc_profile=profile)
    assert main(["deblur", str(photos), "-o", str(tmp_path / "out"), "--weights", str(weights)]) == 0
    with Image.open(tmp_path / "out" / "IMG_0001.png") as restored:
        assert restored.size == (48, 40) and restored.info.get("icc_profile") == profile


def test_heic_without_the_plugin_says_what_to_install(tmp_path, monkeypatch):
    from m2ae_core.errors import ImageInputError
    from m2ae_core.imageio import read_image

    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "photo.heic"
    pillow_heif.from_bytes(mode="RGB", size=(16, 8), data=bytes(16 * 8 * 3)).save(path)
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if not installed
    with pytest.raises(ImageInputError, match="HEIF/HEIC photo.*pip install pillow-heif"):
        read_image(path)


def test_never_overwrites_inputs_or_existing_outputs(tmp_path, weights, capsys):
    src = write_photo(tmp_path / "x.png")
    before = src.read_bytes()
    assert main(["deblur", str(src), "-o", str(src), "--weights", str(weights)]) == 2
    assert "overwrite an input" in capsys.readouterr().err
    assert main(["deblur", str(src), "-o", str(tmp_path), "--weights", str(weights)]) == 2
    assert src.read_bytes() == before
    other = tmp_path / "y.png"
    other.write_bytes(b"keep me")
    assert main(["deblur", str(src), "-o", str(other), "--weights", str(weights)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert other.read_bytes() == b"keep me"


def test_user_mask_option(tmp_path, weights):
    src = write_photo(tmp_path / "p.png", size=(64, 64))
    mask = np.zeros((64, 64), np.uint8)
    mask[:16, :16] = 255
    Image.fromarray(mask).save(tmp_path / "m.png")
    out = tmp_path / "r.png"
    assert main(["deblur", str(src), "-o", str(out), "--weights", str(weights),
                 "--mask", str(tmp_path / "m.png"), "--save-mask"]) == 0
    assert np.array_equal(np.asarray(Image.open(tmp_path / "r_mask.png")) > 0, mask > 0)


def test_missing_weights_and_inputs_fail_cleanly(tmp_path, capsys):
    src = write_photo(tmp_path / "p.png")
    assert main(["deblur", str(src), "-o", str(tmp_path / "o.png"),
                 "--weights", str(tmp_path / "nope.safetensors")]) == 2
    err = capsys.readouterr().err
    assert "nope.safetensors" in err and "Traceback" not in err
    assert main(["deblur", str(tmp_path / "absent.png"), "-o", str(tmp_path / "o.png")]) == 2
    assert not (tmp_path / "o.png").exists()


def test_console_script_help_documents_every_option():
    out = subprocess.run([sys.executable, "-m", "m2ae_core.cli", "deblur", "--help"],
                         capture_output=True, text=True, check=True).stdout
    for option in ("--save-mask", "--save-trajectory", "--mask", "--threshold", "--tile",
                   "--tile-context",
                   "--device", "--weights", "--preserve-sharp", "--overwrite",
                   "--skip-existing", "--format", "--max-pixels", "--recursive",
                   "--name-suffix"):
        assert option in out


def test_console_run_restarts_itself_with_huge_pages_and_works(tmp_path, weights):
    # As a process of its own, `m2ae deblur` re-executes once with glibc's huge-page tunable
    # (m2ae_core/memory.py); the run must still read its arguments and write the result.
    # A sitecustomize on the path records the environment of every interpreter that starts.
    import os

    from m2ae_core import memory

    hook = tmp_path / "hook"
    hook.mkdir()
    seen = tmp_path / "seen.txt"
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        f"with open({str(seen)!r}, 'a') as f:\n"
        "    f.write(os.environ.get('GLIBC_TUNABLES', '-') + '\\n')\n")
    src = write_photo(tmp_path / "in.png")
    out = tmp_path / "out.png"
    env = {k: v for k, v in os.environ.items() if k not in ("GLIBC_TUNABLES", memory.RESTARTED)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(hook), env.get("PYTHONPATH")]))
    probe = ("import runpy, sys; sys.argv = ['m2ae'] + sys.argv[1:]; "
             "runpy.run_module('m2ae_core.cli', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", probe, "deblur", str(src), "-o", str(out),
                           "--weights", str(weights)], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert Image.open(out).size == (48, 40)
    assert "processed" in done.stdout
    expected = ["-", memory.HUGE_PAGES] if memory._glibc() else ["-"]
    assert seen.read_text().split() == expected  # started once plain, restarted once with it


def test_skip_existing_continues_an_interrupted_folder_run(tmp_path, weights, capsys, monkeypatch):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("a", "b", "c"):
        write_photo(folder / f"{name}.png")
    out = tmp_path / "out"
    args = ["deblur", str(folder), "-o", str(out), "--weights", str(weights)]

    import m2ae_core.inference as inference
    real_deblur = inference.deblur
    calls = []

    def deblur_then_ctrl_c(*a, **k):  # the user presses Ctrl-C during the second photo
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_deblur(*a, **k)

    monkeypatch.setattr(inference, "deblur", deblur_then_ctrl_c)
    assert main(args) == 130
    assert "--skip-existing" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.png"]
    first = (out / "a.png").read_bytes()
    monkeypatch.setattr(inference, "deblur", real_deblur)

    assert main(args) == 2  # a plain rerun refuses, naming both ways on
    err = capsys.readouterr().err
    assert "--overwrite" in err and "--skip-existing" in err

    calls.clear()
    monkeypatch.setattr(inference, "deblur", lambda *a, **k: calls.append(1) or real_deblur(*a, **k))
    assert main(args + ["--skip-existing"]) == 0
    assert len(calls) == 2  # b and c only
    assert "1 of 3 outputs exist already" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert (out / "a.png").read_bytes() == first

    calls.clear()
    assert main(args + ["--skip-existing"]) == 0  # nothing left: no model is even loaded
    assert calls == []
    with pytest.raises(SystemExit):
        main(args + ["--skip-existing", "--overwrite"])
    assert "not allowed with" in capsys.readouterr().err


def test_output_format_for_a_folder_of_camera_jpegs(tmp_path, weights):
    folder = tmp_path / "camera"
    folder.mkdir()
    arr = np.random.default_rng(1).integers(0, 255, (40, 48, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "TestCam"  # Make
    Image.fromarray(arr).save(folder / "IMG_1.jpg", exif=exif.tobytes())
    out = tmp_path / "out"
    assert main(["deblur", str(folder), "-o", str(out), "--weights", str(weights),
                 "--format", "jpg", "--save-mask"]) == 0
    result = Image.open(out / "IMG_1.jpg")
    assert result.format == "JPEG" and result.size == (48, 40)
    assert result.getexif().get(0x010F) == "TestCam"
    assert Image.open(out / "IMG_1_mask.png").format == "PNG"
    assert not (out / "IMG_1.png").exists()


def test_format_that_contradicts_the_output_file_name_is_refused(tmp_path, weights, capsys):
    src = write_photo(tmp_path / "p.png")
    assert main(["deblur", str(src), "-o", str(tmp_path / "r.png"), "--weights", str(weights),
                 "--format", "jpg"]) == 2
    assert "--format" in capsys.readouterr().err
    assert not (tmp_path / "r.png").exists()
    assert main(["deblur", str(src), "-o", str(tmp_path / "r.jpeg"), "--weights", str(weights),
                 "--format", "jpg"]) == 0
    assert Image.open(tmp_path / "r.jpeg").format == "JPEG"


def test_max_pixels_limit_is_named_and_can_be_raised(tmp_path, weights, capsys):
    src = write_photo(tmp_path / "p.png", size=(48, 40))  # 1,920 pixels
    out = tmp_path / "r.png"
    args = ["deblur", str(src), "-o", str(out), "--weights", str(weights)]
    assert main(args + ["--max-pixels", "1000"]) == 1
    err = capsys.readouterr().err
    assert "1,920 pixels" in err and "--max-pixels" in err and "Traceback" not in err
    assert not out.exists()
    assert main(args + ["--max-pixels", "2e3"]) == 0
    assert Image.open(out).size == (48, 40)
    with pytest.raises(SystemExit):
        main(args + ["--max-pixels", "-5", "--overwrite"])
    assert "positive number of pixels" in capsys.readouterr().err


@pytest.mark.parametrize("native", [True, False])
def test_dtype_auto_is_the_default_and_follows_the_cpu(tmp_path, weights, capsys, monkeypatch, native):
    from m2ae_core import precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: native)
    src = write_photo(tmp_path / "p.png")
    assert main(["deblur", str(src), "-o", str(tmp_path / "r.png"), "--weights", str(weights)]) == 0
    out = capsys.readouterr().out
    assert ("(bfloat16)" in out) is native
    assert main(["deblur", str(src), "-o", str(tmp_path / "f.png"), "--weights", str(weights),
                 "--dtype", "fp32"]) == 0
    assert "(bfloat16)" not in capsys.readouterr().out


def test_recursive_mirrors_the_tree_and_skips_hidden_and_output_folders(tmp_path, weights, capsys):
    photos = tmp_path / "photos"
    for rel in ("a.png", "2024/b.png", "2024/trip/c.png", ".thumbs/d.png", "2023/a.png"):
        (photos / rel).parent.mkdir(parents=True, exist_ok=True)
        write_photo(photos / rel, size=(32, 24))
    masks = tmp_path / "masks"
    (masks / "2024").mkdir(parents=True)
    Image.fromarray(np.full((24, 32), 255, np.uint8)).save(masks / "2024" / "b.png")
    Image.fromarray(np.zeros((24, 32), np.uint8)).save(masks / "b.png")  # the top-level fallback
    out = photos / "restored"  # inside the tree: results must never become inputs
    args = ["deblur", str(photos), "-o", str(out), "--weights", str(weights), "-r",
            "--save-mask"]
    assert main(args) == 0
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*.png") if "_mask" not in p.name)
    assert written == ["2023/a.png", "2024/b.png", "2024/trip/c.png", "a.png"]
    assert (out / "2024" / "b.png").exists()
    assert main(args + ["--skip-existing"]) == 0
    assert "4 of 4 outputs exist already" in capsys.readouterr().err

    # a mask folder is looked up at the input's place in the tree first
    masked = tmp_path / "masked"
    assert main(["deblur", str(photos), "-o", str(masked), "--weights", str(weights), "-r",
                 "--mask", str(masks), "--save-mask"]) == 1  # a.png has no mask anywhere
    assert "no mask named 'a.*'" in capsys.readouterr().err
    assert np.asarray(Image.open(masked / "2024" / "b_mask.png")).min() == 255
    # without -r only the top level, as before
    flat = tmp_path / "flat"
    assert main(["deblur", str(photos), "-o", str(flat), "--weights", str(weights)]) == 0
    assert sorted(p.name for p in flat.iterdir()) == ["a.png"]


def test_name_suffix_lets_results_sit_next_to_their_photos(tmp_path, weights, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    write_photo(photos / "a.jpg")
    before = (photos / "a.jpg").read_bytes()
    args = ["deblur", str(photos), "-o", str(photos), "--weights", str(weights), "--format", "jpg"]
    assert main(args) == 2  # photos/a.jpg would be replaced by its own result
    assert "overwrite an input" in capsys.readouterr().err
    assert main(args + ["--name-suffix", "_sharp", "--save-mask"]) == 0
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "a_sharp.jpg", "a_sharp_mask.png"]
    assert (photos / "a.jpg").read_bytes() == before
    # a rerun, -r too, takes a_sharp.* for results: nothing new, no a_sharp_sharp
    assert main(args + ["--name-suffix", "_sharp", "-r", "--skip-existing"]) == 0
    assert "1 of 1 outputs exist already" in capsys.readouterr().err
    assert sorted(p.name for p in photos.iterdir()) == ["a.jpg", "a_sharp.jpg", "a_sharp_mask.png"]
    assert main(args + ["--name-suffix", "x/y"]) == 2
    assert "path separator" in capsys.readouterr().err
