#!/usr/bin/env python3
"""Build the training corpus of the shipped audiodenoise model.

The recipe fetches real recordings from Debian bookworm packages with
``apt-get download``, unpacks only the audio it needs, selects files with
fixed rules, places them (hard links into the cache) under::

    OUT/speech/<source>/...   clean speech
    OUT/noise/<source>/...    ambience and effects
    OUT/music/<source>/...    music

and writes ``OUT/manifest.csv`` (one row per file) and ``OUT/summary.json``.
The LibriSpeech excerpt shipped with the project data is copied to
``OUT/speech/librispeech/``.  Every step is skipped when its result is
already there, so a rerun reuses the downloads and the existing corpus.

Usage::

    python data_prep/build_corpus.py [--cache data_prep/cache] [--out data_prep/corpus] [--seed 0]

Needs Python 3.11 with numpy and soundfile, and ``apt-get``, ``dpkg-deb``
and ``tar`` (a Debian or Ubuntu machine; no root needed for the download).
See ``data_prep/README.md``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import hashlib
import json
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import time
import zipfile
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
# ../shared beside the repository root
DEFAULT_LIBRISPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech" / "librispeech-train-clean-100"
KINDS = ("speech", "noise", "music")
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac")
STATS_VERSION = 1
FRAME_SECONDS = 0.05
# A clean-speech target must not be distorted: speech files with more than this
# fraction of samples at full scale (|x| >= 0.999) are skipped as clipped.
MAX_SPEECH_CLIPPED_FRACTION = 1e-3

# The development evaluation set is built from these; training must never see them.
FORBIDDEN_PACKAGES = frozenset({"widelands-data", "widelands"})
LIBRISPEECH_SUBSET = "train-clean-100"

# Names of sounds that are synthetic or user-interface blips rather than recordings.
SYNTHETIC_NAME = re.compile(
    r"(?:^|[^a-z])(beep|click|button|interface|alarm|sine|switch|teleport|bzzt|blip|"
    r"checkbox|slider|\d+hz)"
)


class CorpusError(Exception):
    """A step of the recipe failed; the message says which and what to do."""


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Decision for one candidate file: a kind and a group, or a reason to leave it out."""

    kind: str | None = None
    group: str = ""
    reason: str = ""


def take(kind: str, group: str) -> Verdict:
    return Verdict(kind=kind, group=group)


def leave(reason: str) -> Verdict:
    return Verdict(reason=reason)


@dataclasses.dataclass(frozen=True)
class DebianSource:
    """A Debian package that holds audio, and the rules to select it.

    ``members`` are tar wildcards of what to unpack from the package.  When
    ``zip_member`` is set, that archive is unpacked from the package and only
    its entries under ``zip_prefix`` are extracted.  Paths given to
    ``classify`` are relative to ``root`` inside the unpacked tree, and the
    corpus keeps them under ``OUT/<kind>/<package>/``.
    """

    package: str
    version: str
    licence: str
    members: tuple[str, ...]
    root: str
    classify: Callable[[PurePosixPath], Verdict | None]
    zip_member: str | None = None
    zip_prefix: str = ""


# --------------------------------------------------------------------------- rules


def stem_group(rel: PurePosixPath) -> str:
    """Parent folder plus the file stem without a trailing take number (``rain_11`` -> ``rain``)."""
    stem = re.sub(r"[-_ ]?\d+$", "", rel.stem.lower()) or rel.stem.lower()
    parent = str(rel.parent)
    return stem if parent == "." else f"{parent}/{stem}"


def music_group(rel: PurePosixPath) -> str:
    """File stem without tempo variants (``celtic_fast`` and ``celtic`` are one piece)."""
    return re.sub(r"_(fast|f)$", "", rel.stem.lower())


def synthetic(rel: PurePosixPath) -> bool:
    return SYNTHETIC_NAME.search(str(rel).lower()) is not None


def classify_tuxpaint(rel: PurePosixPath) -> Verdict | None:
    match = re.search(r"_desc_([a-z]+)\.ogg$", rel.name)
    if match is None:
        return None
    lang = match.group(1)
    if lang not in {"el", "be", "bg", "ro"}:
        return leave(f"language {lang}: audible noise floor")
    return take("speech", lang)  # one narrator per language


def classify_fillets(rel: PurePosixPath) -> Verdict | None:
    # sound/<level>/cs/<line>.ogg; the two main voices speak in every level,
    # so the level is the unit a validation split can hold out.
    if rel.suffix != ".ogg" or rel.parent.name != "cs":
        return None
    return take("speech", rel.parts[0])


def classify_klettres(rel: PurePosixPath) -> Verdict | None:
    # <lang>/{alpha,syllab}/<item>.ogg, one speaker set per language
    if rel.suffix != ".ogg" or len(rel.parts) != 3:
        return None
    return take("speech", rel.parts[0])


def classify_0ad(rel: PurePosixPath) -> Verdict | None:
    if rel.suffix not in AUDIO_SUFFIXES:
        return None
    top = rel.parts[0]
    if top == "voice":
        return leave("speech (unit voices)")
    if top == "interface":
        return leave("synthetic (interface)")
    if top == "music":
        return take("music", music_group(rel))
    if synthetic(rel):
        return leave("synthetic (name)")
    return take("noise", stem_group(rel))


# Megaglest units answer orders with short spoken lines ("_ack", "_select");
# the animals' answers are animal calls and stay.
MEGAGLEST_ANIMALS = ("cow", "pig", "sheep", "chicken", "horse", "wolf", "bird")


def classify_megaglest(rel: PurePosixPath) -> Verdict | None:
    if rel.suffix not in AUDIO_SUFFIXES:
        return None
    name = rel.name.lower()
    if re.search(r"_(ack|select)\d*\.", name) and not name.startswith(MEGAGLEST_ANIMALS):
        return leave("speech (unit acknowledgements)")
    if synthetic(rel):
        return leave("synthetic (name)")
    return take("noise", stem_group(rel))


STK_SPEECH = {"nolok_speech", "sara_airport_pa", "wee", "ugh"}
STK_SYNTHETIC = {
    "appear",
    "energy_bar_full",
    "energy_bar_unfull",
    "forcefield",
    "grab_collectable",
    "locked",
    "portal",
    "pre_start_race",
    "start_race",
    "swap",
    "tractor_beam",
}
STK_JINGLES = {
    "gp_end",
    "last_lap_fanfare",
    "race_finish",
    "race_finish_victory",
    "track_intro",
    "goal_scored",
}


def stk_track_music(folder: Path) -> set[str]:
    """Names of the .ogg files a track folder's ``*.music`` descriptions point to."""
    names: set[str] = set()
    for music in folder.glob("*.music"):
        names.update(re.findall(r'file\s*=\s*"([^"]+\.ogg)"', music.read_text(errors="replace")))
    return names


def classify_stk(rel: PurePosixPath, *, track_music: set[str]) -> Verdict | None:
    if rel.suffix != ".ogg":
        return None
    stem = rel.stem.lower()
    if rel.parts[0] == "music" or str(rel) in track_music:
        return take("music", music_group(rel))
    if stem in STK_JINGLES:
        return take("music", stem)
    if stem in STK_SPEECH:
        return leave("speech or voice")
    if stem in STK_SYNTHETIC or synthetic(rel):
        return leave("synthetic (name)")
    return take("noise", stem_group(rel))


FLIGHTGEAR_SYNTHETIC = {"avionics-400hz", "overspeed", "overspeed2", "gear-hrn", "stall"}


def classify_flightgear(rel: PurePosixPath) -> Verdict | None:
    if rel.suffix != ".wav":
        return None
    if rel.parts[0] in {"mk-viii", "tcas"}:
        return leave("speech (cockpit voice callouts)")
    if rel.stem.lower() in FLIGHTGEAR_SYNTHETIC:
        return leave("synthetic (warning tone)")
    if synthetic(rel):
        return leave("synthetic (name)")
    return take("noise", stem_group(rel))


def classify_wesnoth(rel: PurePosixPath) -> Verdict | None:
    if rel.suffix != ".ogg":
        return None
    if synthetic(rel):
        return leave("synthetic (name)")
    return take("noise", stem_group(rel))


DEBIAN_SOURCES: tuple[DebianSource, ...] = (
    DebianSource(
        package="tuxpaint-stamps-default",
        version="2022.06.04-1",
        licence="GPL-2",
        members=tuple(f"./usr/share/tuxpaint/stamps/*_desc_{lang}.ogg" for lang in ("el", "be", "bg", "ro")),
        root="usr/share/tuxpaint/stamps",
        classify=classify_tuxpaint,
    ),
    DebianSource(
        package="fillets-ng-data-cs",
        version="1.0.1-1.1",
        licence="GPL-2",
        members=("./usr/share/games/fillets-ng/sound/*/cs/*.ogg",),
        root="usr/share/games/fillets-ng/sound",
        classify=classify_fillets,
    ),
    DebianSource(
        package="klettres-data",
        version="4:22.12.3-1",
        licence="GPL-2+",
        members=("./usr/share/klettres/*.ogg",),
        root="usr/share/klettres",
        classify=classify_klettres,
    ),
    DebianSource(
        package="0ad-data",
        version="0.0.26-1",
        licence="CC-BY-SA-3.0",
        members=("./usr/share/games/0ad/mods/public/public.zip",),
        root="audio",
        classify=classify_0ad,
        zip_member="usr/share/games/0ad/mods/public/public.zip",
        zip_prefix="audio/",
    ),
    DebianSource(
        package="megaglest-data",
        version="3.13.0-3",
        licence="CC-BY-SA-3.0",
        members=(
            "./usr/share/games/megaglest/tilesets/*/sounds/*.ogg",
            "./usr/share/games/megaglest/tilesets/*/sounds/*.wav",
            "./usr/share/games/megaglest/techs/*/commondata/*.wav",  # no .ogg there
        ),
        root="usr/share/games/megaglest",
        classify=classify_megaglest,
    ),
    DebianSource(
        package="supertuxkart-data",
        version="1.4+dfsg-2",
        licence="CC-BY-SA / GPL (per file, see the package's copyright)",
        members=("./usr/share/games/supertuxkart/data/*.ogg", "./usr/share/games/supertuxkart/data/*.music"),
        root="usr/share/games/supertuxkart/data",
        classify=classify_stk,  # bound to the track music list in select_debian()
    ),
    DebianSource(
        package="flightgear-data-base",
        version="1:2020.3.16+dfsg-1",
        licence="GPL-2",
        members=("./usr/share/games/flightgear/Sounds/*.wav",),
        root="usr/share/games/flightgear/Sounds",
        classify=classify_flightgear,
    ),
    DebianSource(
        package="wesnoth-1.16-data",
        version="1:1.16.9-1",
        licence="GPL-2",
        members=("./usr/share/games/wesnoth/1.16/data/core/sounds/*.ogg",),
        root="usr/share/games/wesnoth/1.16/data/core/sounds",
        classify=classify_wesnoth,
    ),
)


# --------------------------------------------------------------------------- fetch


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def require(tool: str) -> None:
    if shutil.which(tool) is None:
        raise CorpusError(f"`{tool}` not found: the recipe needs a Debian or Ubuntu machine (apt-get, dpkg-deb, tar)")


def run(cmd: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess:
    require(cmd[0])
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def find_deb(debs: Path, package: str) -> Path | None:
    found = sorted(debs.glob(f"{package}_*.deb"))
    return found[-1] if found else None


def deb_version(deb: Path) -> str:
    result = run(["dpkg-deb", "--field", str(deb), "Version"])
    if result.returncode != 0:
        raise CorpusError(f"`{deb}`: not a readable .deb ({result.stderr.strip()}); delete it and rerun")
    return result.stdout.strip()


def download(source: DebianSource, debs: Path, *, state: dict, any_version: bool) -> Path:
    """Return the package's .deb in ``debs``, fetching it with ``apt-get download`` if absent.

    ``apt-get update`` runs at most once, and only when the download fails
    for lack of package lists (or when ``state['update']`` asks for it).
    apt checks the download against the archive's hash; it lands in a
    staging folder first, so an interrupted run never leaves a partial .deb.
    """
    deb = find_deb(debs, source.package)
    if deb is not None:
        return deb
    spec = source.package if any_version else f"{source.package}={source.version}"
    staging = debs / ".download"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for attempt in range(2):
        if state.get("update") and not state.get("updated"):
            log("apt-get update")
            result = run(["apt-get", "update"])
            if result.returncode != 0:
                raise CorpusError(f"`apt-get update` failed: {result.stderr.strip()[-500:]}")
            state["updated"] = True
        log(f"apt-get download {spec}")
        result = run(["apt-get", "download", spec], cwd=staging)
        fetched = find_deb(staging, source.package)
        if result.returncode == 0 and fetched is not None:
            deb = debs / fetched.name
            os.replace(fetched, deb)
            staging.rmdir()
            return deb
        stale_lists = re.search(
            r"Unable to locate package|has no installation candidate|Can't find a source|"
            r"Version '.*' for '.*' was not found|404",
            result.stderr,
        )
        if attempt == 0 and stale_lists and not state.get("updated"):
            state["update"] = True
            continue
        hint = "" if any_version else f" (pinned to {source.version}; --any-version takes the archive's candidate)"
        raise CorpusError(f"`apt-get download {spec}` failed{hint}: {result.stderr.strip()[-500:]}")
    raise CorpusError(f"`apt-get download {spec}` failed")


def unpack(source: DebianSource, deb: Path, unpacked: Path) -> Path:
    """Unpack the needed members of ``deb`` under ``unpacked/<package>``; return the tree."""
    tree = unpacked / source.package
    marker = tree / ".unpacked.json"
    wanted = {"deb": deb.name, "members": list(source.members), "zip_prefix": source.zip_prefix}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return tree
    if tree.exists():
        shutil.rmtree(tree)
    tree.mkdir(parents=True)
    log(f"unpacking {deb.name}")
    require("dpkg-deb")
    require("tar")
    deb_tar = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    untar = subprocess.run(
        ["tar", "-x", "-C", str(tree), "--wildcards", *source.members],
        stdin=deb_tar.stdout,
        capture_output=True,
        text=True,
    )
    deb_tar.stdout.close()
    if deb_tar.wait() != 0 or untar.returncode != 0:
        raise CorpusError(f"`{deb.name}`: unpacking {source.members} failed: {untar.stderr.strip()[-500:]}")
    if source.zip_member is not None:
        archive = tree / source.zip_member
        log(f"extracting {source.zip_prefix}* from {archive.name}")
        with zipfile.ZipFile(archive) as zf:
            members = [n for n in zf.namelist() if n.startswith(source.zip_prefix) and not n.endswith("/")]
            for name in members:
                if ".." in PurePosixPath(name).parts:
                    raise CorpusError(f"`{archive}`: unsafe entry {name!r}")
                zf.extract(name, tree)
        archive.unlink()  # 3 GB; only its audio is needed
    marker.write_text(json.dumps(wanted))
    return tree


# --------------------------------------------------------------------------- select


@dataclasses.dataclass(frozen=True)
class Item:
    """One selected file: where it comes from and where it goes in the corpus."""

    kind: str
    source: str
    src: Path
    rel: str  # path under OUT/<kind>/<source>/
    group: str
    licence: str
    origin: str

    @property
    def path(self) -> str:
        return f"{self.kind}/{self.source}/{self.rel}"


def audio_files(root: Path) -> list[PurePosixPath]:
    """Audio files under ``root`` as sorted relative POSIX paths."""
    found = [
        PurePosixPath(p.relative_to(root).as_posix())
        for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES
    ]
    return sorted(found)


def select_debian(source: DebianSource, tree: Path, version: str) -> tuple[list[Item], list[dict]]:
    root = tree / source.root
    classify = source.classify
    if source.package == "supertuxkart-data":
        track_music = {
            f"{folder.relative_to(root).as_posix()}/{name}"
            for folder in sorted((root / "tracks").glob("*"))
            for name in stk_track_music(folder)
        }

        def classify(rel: PurePosixPath) -> Verdict | None:
            return classify_stk(rel, track_music=track_music)

    items, excluded = [], []
    origin = f"debian bookworm {source.package} {version}"
    for rel in audio_files(root):
        verdict = classify(rel)
        if verdict is None:
            continue
        if verdict.kind is None:
            excluded.append({"source": source.package, "path": str(rel), "reason": verdict.reason})
            continue
        items.append(
            Item(
                kind=verdict.kind,
                source=source.package,
                src=root / rel,
                rel=str(rel),
                group=f"{source.package}/{verdict.group}",
                licence=source.licence,
                origin=origin,
            )
        )
    if not items:
        raise CorpusError(f"`{source.package}`: no audio selected under {root}; the package layout changed?")
    return items, excluded


def librispeech_subsets(speakers_txt: Path) -> dict[str, str]:
    subsets = {}
    for line in speakers_txt.read_text().splitlines():
        if line.startswith(";") or "|" not in line:
            continue
        fields = [f.strip() for f in line.split("|")]
        subsets[fields[0]] = fields[2]
    return subsets


def select_librispeech(folder: Path) -> list[Item]:
    """The LibriSpeech excerpt; refuses any speaker outside train-clean-100 (the eval set is test-other)."""
    if not folder.is_dir():
        raise CorpusError(f"`{folder}`: LibriSpeech excerpt not found; pass --librispeech")
    subsets = librispeech_subsets(folder / "SPEAKERS.TXT")
    items = []
    for path in sorted(folder.glob("*.flac")):
        speaker = path.name.split("-")[0]
        subset = subsets.get(speaker)
        if subset != LIBRISPEECH_SUBSET:
            raise CorpusError(
                f"`{path.name}`: speaker {speaker} belongs to {subset or 'no known subset'}, "
                f"not {LIBRISPEECH_SUBSET}; test-other speakers are the evaluation set and must not be trained on"
            )
        items.append(
            Item(
                kind="speech",
                source="librispeech",
                src=path,
                rel=path.name,
                group=f"librispeech/{speaker}",
                licence="CC-BY-4.0",
                origin=f"LibriSpeech {LIBRISPEECH_SUBSET} (Panayotov et al., 2015)",
            )
        )
    if not items:
        raise CorpusError(f"`{folder}`: no .flac files")
    return items


# --------------------------------------------------------------------------- analyse


def file_sha1(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def db(x: float) -> float:
    return round(20.0 * float(np.log10(max(x, 1e-10))), 2)


def analyse(path: Path) -> dict:
    """Duration, format and levels of one file; ``{'error': ...}`` when it cannot be decoded.

    Levels are in dBFS on the channel mean: ``rms_dbfs`` over the whole file,
    ``peak_dbfs``, and the 10th / 90th percentiles of 50 ms frame RMS
    (``floor_dbfs`` estimates the noise floor between words or events).
    """
    try:
        info = sf.info(str(path))
        wav, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # libsndfile raises several types
        return {"error": f"unreadable: {type(exc).__name__}: {exc}".strip()}
    frames, channels = wav.shape
    stats = {
        "duration_s": round(frames / sample_rate, 4),
        "sample_rate": int(sample_rate),
        "channels": int(channels),
        "format": info.format,
        "subtype": info.subtype,
    }
    if frames == 0:
        return {**stats, "error": "empty (0 samples)"}
    mono = wav.mean(axis=1, dtype=np.float64)
    peak = float(np.max(np.abs(mono)))
    if peak == 0.0:
        return {**stats, "error": "silent (all samples zero)"}
    hop = max(1, int(FRAME_SECONDS * sample_rate))
    n_frames = max(1, frames // hop)
    framed = mono[: n_frames * hop].reshape(n_frames, -1) if frames >= hop else mono[None, :]
    frame_rms = np.sqrt(np.mean(framed**2, axis=1))
    return {
        **stats,
        "rms_dbfs": db(float(np.sqrt(np.mean(mono**2)))),
        "peak_dbfs": db(peak),
        "floor_dbfs": db(float(np.percentile(frame_rms, 10))),
        "loud_dbfs": db(float(np.percentile(frame_rms, 90))),
        "clipped_fraction": round(float(np.mean(np.abs(wav) >= 0.999)), 6),
    }


def analyse_one(task: tuple[str, str]) -> tuple[str, dict]:
    key, path = task
    return key, analyse(Path(path))


def analyse_all(paths: dict[str, Path], cache_file: Path, *, jobs: int) -> dict[str, dict]:
    """Analyse each file once: results are cached by content hash in ``cache_file``."""
    cached: dict[str, dict] = {}
    if cache_file.exists():
        data = json.loads(cache_file.read_text())
        if data.get("version") == STATS_VERSION:
            cached = data["stats"]
    todo = sorted({sha: str(path) for sha, path in paths.items() if sha not in cached}.items())
    if todo:
        log(f"analysing {len(todo)} files on {jobs} processes")
        with multiprocessing.Pool(jobs) as pool:
            for done, (sha, stats) in enumerate(pool.imap_unordered(analyse_one, todo, chunksize=8), 1):
                cached[sha] = stats
                if done % 1000 == 0:
                    log(f"  {done}/{len(todo)}")
        write_atomic(cache_file, json.dumps({"version": STATS_VERSION, "stats": cached}, sort_keys=True))
    return {sha: cached[sha] for sha in paths}


# --------------------------------------------------------------------------- place


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def place(src: Path, dst: Path, *, link: bool) -> None:
    """Hard-link (or copy) ``src`` to ``dst`` unless an identical file is already there."""
    if dst.exists():
        if dst.samefile(src):
            return
        if dst.stat().st_size == src.stat().st_size and file_sha1(dst) == file_sha1(src):
            return
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        if not link:
            raise OSError("copy requested")
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def prune(out: Path, keep: set[str]) -> int:
    """Remove files under OUT/<kind>/ that the current selection does not hold."""
    removed = 0
    for kind in KINDS:
        base = out / kind
        if not base.exists():
            continue
        for path in sorted(base.rglob("*"), reverse=True):
            rel = path.relative_to(out).as_posix()
            if path.is_file() and rel not in keep:
                path.unlink()
                removed += 1
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()
    return removed


# --------------------------------------------------------------------------- report

MANIFEST_FIELDS = (
    "kind",
    "source",
    "path",
    "duration_s",
    "sample_rate",
    "channels",
    "format",
    "subtype",
    "group",
    "licence",
    "origin",
    "rms_dbfs",
    "peak_dbfs",
    "floor_dbfs",
    "loud_dbfs",
    "clipped_fraction",
    "sha1",
)


def summarise(rows: list[dict], skipped: list[dict], excluded: list[dict]) -> dict:
    per_source: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for row in rows:
        per_source[(row["kind"], row["source"])].append(row)
    sources = []
    for (kind, source), group in sorted(per_source.items(), key=lambda kv: (KINDS.index(kv[0][0]), kv[0][1])):
        seconds = sum(r["duration_s"] for r in group)
        sources.append(
            {
                "kind": kind,
                "source": source,
                "files": len(group),
                "groups": len({r["group"] for r in group}),
                "hours": round(seconds / 3600, 3),
                "sample_rates": sorted({r["sample_rate"] for r in group}),
                "median_rms_dbfs": round(float(np.median([r["rms_dbfs"] for r in group])), 1),
                "median_floor_dbfs": round(float(np.median([r["floor_dbfs"] for r in group])), 1),
                "median_loud_minus_floor_db": round(
                    float(np.median([r["loud_dbfs"] - r["floor_dbfs"] for r in group])), 1
                ),
                "files_with_clipping": sum(1 for r in group if r["clipped_fraction"] > MAX_SPEECH_CLIPPED_FRACTION),
            }
        )
    kinds = {}
    for kind in KINDS:
        group = [s for s in sources if s["kind"] == kind]
        kinds[kind] = {"files": sum(s["files"] for s in group), "hours": round(sum(s["hours"] for s in group), 3)}
    excluded_counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for entry in excluded:
        excluded_counts[entry["source"]][entry["reason"]] += 1
    return {
        "kinds": kinds,
        "sources": sources,
        "skipped": skipped,
        "excluded_counts": {s: dict(sorted(r.items())) for s, r in sorted(excluded_counts.items())},
        "excluded": excluded,
    }


def print_table(summary: dict) -> None:
    header = (
        f"{'kind':<7} {'source':<26} {'files':>6} {'groups':>6} {'hours':>7} {'rate (Hz)':<12} "
        f"{'rms':>6} {'floor':>6} {'range':>6}"
    )
    print(header)
    print("-" * len(header))
    for s in summary["sources"]:
        low, high = s["sample_rates"][0], s["sample_rates"][-1]
        rates = str(low) if low == high else f"{low}-{high}"
        print(
            f"{s['kind']:<7} {s['source']:<26} {s['files']:>6} {s['groups']:>6} {s['hours']:>7.2f} {rates:<12} "
            f"{s['median_rms_dbfs']:>6.1f} {s['median_floor_dbfs']:>6.1f} {s['median_loud_minus_floor_db']:>6.1f}"
        )
    print("-" * len(header))
    for kind, total in summary["kinds"].items():
        print(f"{kind:<7} {'(all)':<26} {total['files']:>6} {'':>6} {total['hours']:>7.2f}")
    print("levels: median dBFS per file (rms, 10th-percentile 50 ms frame = floor, 90th minus 10th = range)")
    if summary["excluded_counts"]:
        print("\nleft out by rule:")
        for source, reasons in summary["excluded_counts"].items():
            for reason, count in reasons.items():
                print(f"  {source:<26} {count:>5}  {reason}")
    print(f"\nskipped: {len(summary['skipped'])}")
    reasons: dict[tuple[str, str], int] = defaultdict(int)
    for entry in summary["skipped"]:
        reason = "duplicate of an earlier file" if entry["reason"].startswith("duplicate") else entry["reason"]
        reasons[(entry["source"], reason)] += 1
    for (source, reason), count in sorted(reasons.items()):
        print(f"  {source:<26} {count:>5}  {reason}")


# --------------------------------------------------------------------------- main


def build(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    cache, out = args.cache.resolve(), args.out.resolve()
    timings = {}

    forbidden = FORBIDDEN_PACKAGES & {s.package for s in DEBIAN_SOURCES}
    if forbidden:
        raise CorpusError(f"{sorted(forbidden)} hold the evaluation set's noise; remove them from DEBIAN_SOURCES")

    items: list[Item] = select_librispeech(args.librispeech)
    excluded: list[dict] = []
    versions = {}
    state = {"update": args.apt_update}
    t0 = time.monotonic()
    debs = {s.package: download(s, cache / "debs", state=state, any_version=args.any_version) for s in DEBIAN_SOURCES}
    timings["download_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each unpack is a dpkg-deb | tar pipe
        trees = list(pool.map(lambda s: unpack(s, debs[s.package], cache / "unpacked"), DEBIAN_SOURCES))
    for source, tree in zip(DEBIAN_SOURCES, trees, strict=True):
        versions[source.package] = deb_version(debs[source.package])
        if versions[source.package] != source.version:
            log(f"warning: {source.package} is {versions[source.package]}, the recipe was measured on {source.version}")
        selected, left_out = select_debian(source, tree, versions[source.package])
        items += selected
        excluded += left_out
    timings["unpack_select_s"] = round(time.monotonic() - t0, 1)

    t0 = time.monotonic()
    hashes = {}
    for item in items:
        hashes[item.path] = file_sha1(item.src)
    stats = analyse_all({hashes[i.path]: i.src for i in items}, cache / "stats.json", jobs=args.jobs)
    timings["analyse_s"] = round(time.monotonic() - t0, 1)

    rows, skipped, first_of = [], [], {}
    for item in items:  # sources in a fixed order, paths sorted: the first copy of a sound wins
        sha = hashes[item.path]
        info = stats[sha]
        if "error" in info:
            skipped.append({"source": item.source, "path": item.path, "reason": info["error"]})
            continue
        if item.kind == "speech" and info["clipped_fraction"] > MAX_SPEECH_CLIPPED_FRACTION:
            reason = f"clipped speech (more than {MAX_SPEECH_CLIPPED_FRACTION:.1%} of samples at full scale)"
            skipped.append({"source": item.source, "path": item.path, "reason": reason})
            continue
        if sha in first_of:
            skipped.append({"source": item.source, "path": item.path, "reason": f"duplicate of {first_of[sha]}"})
            continue
        first_of[sha] = item.path
        rows.append(
            {
                "kind": item.kind,
                "source": item.source,
                "path": item.path,
                **{k: info[k] for k in ("duration_s", "sample_rate", "channels", "format", "subtype")},
                "group": item.group,
                "licence": item.licence,
                "origin": item.origin,
                **{k: info[k] for k in ("rms_dbfs", "peak_dbfs", "floor_dbfs", "loud_dbfs", "clipped_fraction")},
                "sha1": sha,
                "_src": item.src,
            }
        )

    t0 = time.monotonic()
    for row in rows:
        src = row.pop("_src")
        # hard links only into our own cache; shared data (LibriSpeech) is copied
        place(src, out / row["path"], link=not args.copy and src.is_relative_to(cache))
    removed = prune(out, {row["path"] for row in rows})
    timings["place_s"] = round(time.monotonic() - t0, 1)
    if removed:
        log(f"removed {removed} files no longer selected")

    rows.sort(key=lambda r: (KINDS.index(r["kind"]), r["source"], r["path"]))
    tmp = out / ".manifest.csv.tmp"
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out / "manifest.csv")

    summary = summarise(rows, skipped, excluded)
    timings["total_s"] = round(time.monotonic() - started, 1)
    summary = {
        "recipe": "data_prep/build_corpus.py",
        "seed": args.seed,
        "sampling": "none: every file that passes the rules is taken",
        "packages": {p: {"version": v, "deb": debs[p].name} for p, v in versions.items()},
        "librispeech": str(args.librispeech),
        "timings": timings,
        **summary,
    }
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def parse_args(argv: Iterable[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=HERE / "cache", help="downloads and unpacked packages")
    parser.add_argument("--out", type=Path, default=HERE / "corpus", help="the corpus")
    parser.add_argument("--seed", type=int, default=0, help="recorded; the rules take every file, no sampling")
    parser.add_argument("--librispeech", type=Path, default=DEFAULT_LIBRISPEECH, help="LibriSpeech excerpt folder")
    parser.add_argument("--apt-update", action="store_true", help="run `apt-get update` before downloading")
    parser.add_argument("--any-version", action="store_true", help="download the archive's candidate version")
    parser.add_argument("--copy", action="store_true", help="copy files instead of hard-linking them")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for analysis")
    return parser.parse_args(argv)


def main(argv: Iterable[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summary = build(args)
    except CorpusError as exc:
        log(f"error: {exc}")
        return 1
    print_table(summary)
    print(f"\nwrote {args.out / 'manifest.csv'} and summary.json in {summary['timings']['total_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
