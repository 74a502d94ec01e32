"""The listening page of ``audiodenoise evaluate --html DIR``: one folder that opens from disk.

``DIR/index.html`` holds the summary (each system's mean, its gain over the
noisy input with a 95 % confidence interval, n), the SNR groups, the
noise-removed / speech-distortion figures where there are some, a per-file
table that sorts when a header is clicked, and, for a few chosen pairs (the
worst, the best and some at random), noisy / denoised / clean players side by
side with their spectrograms. ``DIR/media/`` holds the audio (16 kHz mono
FLAC, what was scored) and the pictures. Nothing is fetched from a network:
the style and the script are inline.
"""

from __future__ import annotations

import html
import io
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

from . import __version__, outputs
from .errors import AudioDenoiseError, ConfigError
from .metrics import DECOMPOSITION, METRICS, SAMPLE_RATE
from .pairs import SNR_GROUPS
from .report import PAGE_MARK, replace_folder

LISTEN_DEFAULT = 6
METRIC_LABELS = {"pesq_wb": "PESQ-WB", "stoi": "STOI", "si_sdr": "SI-SDR dB",
                 "noise_removed_db": "noise removed dB", "speech_distortion_db": "speech distortion dB"}
DIGITS = {"pesq_wb": 2, "stoi": 3, "si_sdr": 1, "noise_removed_db": 1, "speech_distortion_db": 1}

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}th,td{border:1px solid #ccc;padding:3px 7px;text-align:right}
th{background:#f3f3f3}td.l,th.l{text-align:left}.muted{color:#777}.up{color:#176d17}.down{color:#b02020}
table.sortable th{cursor:pointer;user-select:none}table.sortable th[aria-sort=ascending]::after{content:" \\25B2"}
table.sortable th[aria-sort=descending]::after{content:" \\25BC"}
.pair{margin:1em 0 1.6em}.clips{display:flex;gap:10px;overflow-x:auto}
.clip{flex:0 0 288px;border:1px solid #ddd;padding:6px;background:#fafafa}.clip img{display:block;width:288px}
#files td:first-child{white-space:nowrap}
.clip .scores{display:block;min-height:4.3em}.clip audio{width:288px;margin-top:4px}.clip b{font-size:.95em}
"""

_SCRIPT = """
function sortTable(th){
  const table=th.closest('table'), body=table.tBodies[0], col=th.cellIndex;
  const asc=th.getAttribute('aria-sort')!=='ascending';
  for(const other of th.parentNode.children) other.removeAttribute('aria-sort');
  th.setAttribute('aria-sort', asc?'ascending':'descending');
  const key=r=>{const c=r.cells[col]; const v=c.dataset.v; return v===undefined?c.textContent:v;};
  const numeric=th.dataset.type==='num';
  const rows=Array.from(body.rows);
  rows.sort((a,b)=>{
    let x=key(a), y=key(b);
    if(numeric){x=x===''?NaN:+x; y=y===''?NaN:+y;
      if(isNaN(x)&&isNaN(y)) return 0; if(isNaN(x)) return 1; if(isNaN(y)) return -1;
      return asc?x-y:y-x;}
    return asc?x.localeCompare(y):y.localeCompare(x);
  });
  for(const r of rows) body.appendChild(r);
}
document.querySelectorAll('table.sortable th').forEach(th=>th.addEventListener('click',()=>sortTable(th)));
"""


def choose_pairs(report: dict[str, Any], n: int, *, seed: int = 0) -> list[tuple[str, str]]:
    """``[(id, why), ...]``: the worst and best pairs by the first system's PESQ-WB gain, and some at random.

    About a third each (worst first); with no system, by the noisy input's
    PESQ-WB. Pairs a system failed on are not chosen.
    """
    if n < 0:
        raise ConfigError(f"--listen must be 0 or more, got {n}")
    names = [s["name"] for s in report.get("systems", [])]
    rows = [r for r in report["files"] if all(r["systems"][name]["processed"] for name in names)]

    def gain(row: dict) -> float:
        if not names:
            return row["noisy"]["pesq_wb"]
        return row["systems"][names[0]]["processed"]["pesq_wb"] - row["noisy"]["pesq_wb"]

    ranked = sorted(rows, key=lambda r: (gain(r), r["id"]))
    n = min(n, len(ranked))
    n_worst = math.ceil(n / 3)
    n_best = min(math.ceil(n / 3), n - n_worst)
    chosen: list[tuple[str, str]] = [(r["id"], "worst") for r in ranked[:n_worst]]
    chosen += [(r["id"], "best") for r in ranked[len(ranked) - n_best :][::-1]]
    taken = {i for i, _ in chosen}
    rest = [r["id"] for r in ranked if r["id"] not in taken]
    rng = np.random.default_rng(seed)
    chosen += [(i, "random") for i in sorted(rng.choice(rest, size=n - len(chosen), replace=False).tolist())]
    return chosen


def write_page(report: dict[str, Any], folder: str | os.PathLike, *, listen: int = LISTEN_DEFAULT,
               seed: int = 0) -> Path:
    """Write the listening page of ``report`` to ``folder`` (``index.html`` + ``media/``).

    ``report`` must come from :func:`~audiodenoise.evaluate.evaluate` with
    ``keep_outputs=True`` when ``listen > 0``. The folder is built beside its
    final place and renamed into it, so a failure leaves no half page; a
    previous page there is replaced (the caller checks it may be, see
    :func:`~audiodenoise.outputs.check_output_folder`).

    Returns
    -------
    the path of ``index.html``
    """
    folder = Path(folder)
    chosen = choose_pairs(report, listen, seed=seed)
    if chosen and "_signals" not in report:
        raise ConfigError("the listening page needs the scored signals: evaluate(..., keep_outputs=True)")
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".part", dir=folder.parent))
    except OSError as exc:
        raise AudioDenoiseError(f"{folder}: cannot create the page folder ({exc.strerror or exc})") from None
    try:
        (tmp / "media").mkdir()
        listening = _listening_section(report, chosen, tmp / "media")
        body = _page_html(report, listening)
        outputs.write_bytes(tmp / "index.html", body.encode())
        os.chmod(tmp, 0o777 & ~_umask())
        replace_folder(tmp, folder)
    except OSError as exc:
        raise AudioDenoiseError(f"{folder}: cannot write the page ({exc.strerror or exc})") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder / "index.html"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# -- sections ------------------------------------------------------------------


def _page_html(report: dict[str, Any], listening: str) -> str:
    systems = report.get("systems", [])
    title = "audiodenoise evaluation: " + (", ".join(s["name"] for s in systems) or "noisy input only")
    sections = [
        f"<h1>{_e(title)}</h1>",
        f"<p class=muted>{report['n_pairs']} pairs, {report['seconds'] / 60:.1f} min; noisy "
        f"<code>{_e(report['noisy_dir'])}</code>, clean <code>{_e(report['clean_dir'])}</code>. "
        f"Protocol: {_e(report['protocol'])}. Intervals are 95 % confidence intervals of the mean "
        f"(Student's t); a gain is the system's score minus the noisy input's, pair by pair.</p>",
        _failures(report),
        "<h2>Summary</h2>", _summary_table(systems, scope=None, report=report),
        _groups_section(report),
        _decomposition_section(systems),
        listening,
        "<h2>Every pair</h2><p class=muted>Click a column header to sort.</p>", _files_table(report),
    ]
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>\n" + PAGE_MARK + "\n"
        f'<meta name="version" content="{_e(__version__)}">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>\n"
        + "\n".join(s for s in sections if s)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


def _failures(report: dict[str, Any]) -> str:
    items = [f"<li>{_e(s['name'])}: {_e(f['id'])}: {_e(f['reason'])}</li>"
             for s in report.get("systems", []) for f in s["failures"]]
    if not items:
        return ""
    return "<h2>Failures (left out of the means)</h2><ul>" + "".join(items) + "</ul>"


def _summary_table(systems: list[dict], *, scope: str | None, report: dict[str, Any]) -> str:
    def stats_of(system: dict) -> dict:
        return system["stats"] if scope is None else system["groups"][scope]["stats"]

    head = "<tr><th class=l>system</th>" + "".join(f"<th>{METRIC_LABELS[m]}</th>" for m in METRICS) + "</tr>"
    if systems:
        noisy = stats_of(systems[0])["noisy"]
    else:
        from .metrics import mean_ci

        rows = [r for r in report["files"] if scope is None or r["group"] == scope]
        noisy = {m: mean_ci(r["noisy"][m] for r in rows) for m in METRICS}
    lines = [head, "<tr><td class=l>noisy input (no processing)</td>"
             + "".join(f"<td>{_mean_cell(noisy[m], m)}</td>" for m in METRICS) + "</tr>"]
    for system in systems:
        stats = stats_of(system)
        cells = "".join(f"<td>{_mean_cell(stats['processed'][m], m)}<br>{_gain_cell(stats['delta'][m], m)}</td>"
                        for m in METRICS)
        lines.append(f"<tr><td class=l>{_e(system['name'])}</td>{cells}</tr>")
    return "<table class=summary>" + "".join(lines) + "</table>"


def _groups_section(report: dict[str, Any]) -> str:
    if not report["groups"]:
        return ""
    parts = ["<h2>By input SNR</h2>"]
    for group in SNR_GROUPS:
        info = report["groups"][group]
        snrs = ", ".join(f"{s:g}" for s in info["snr_db"]) or "none"
        parts.append(f"<h3>{group} (SNR {_e(snrs)} dB, {info['n_pairs']} pairs)</h3>")
        if info["n_pairs"]:
            parts.append(_summary_table(report.get("systems", []), scope=group, report=report))
    return "".join(parts)


def _decomposition_section(systems: list[dict]) -> str:
    decomposed = [s for s in systems if s["stats"]["noise_removed_db"]]
    if not decomposed:
        return ""
    scopes = ["all"] + (list(SNR_GROUPS) if decomposed[0]["groups"] else [])
    head = "<tr><th class=l>system</th><th class=l>figure</th>" + "".join(f"<th>{s}</th>" for s in scopes) + "</tr>"
    lines = [head]
    for system in decomposed:
        for key in DECOMPOSITION:
            cells = []
            for scope in scopes:
                stats = system["stats"] if scope == "all" else system["groups"][scope]["stats"]
                cells.append(f"<td>{_mean_cell(stats[key], key)}</td>")
            lines.append(f"<tr><td class=l>{_e(system['name'])}</td><td class=l>{METRIC_LABELS[key]}</td>"
                         + "".join(cells) + "</tr>")
    return (
        "<h2>Noise removed and speech distorted</h2><p class=muted>The model's mask (computed from the noisy "
        "input) applied separately to the clean and the noise parts of each pair (noisy = clean + noise). "
        "Noise removed = 10 log10(E[noise] / E[mask &times; noise]): higher is better. Speech distortion = "
        "10 log10(E[mask &times; clean &minus; clean] / E[clean]): lower is better. Mean over pairs.</p>"
        "<table>" + "".join(lines) + "</table>"
    )


def _files_table(report: dict[str, Any]) -> str:
    names = [s["name"] for s in report.get("systems", [])]
    columns = [("id", "str", "l"), ("SNR dB", "num", ""), ("group", "str", "l"), ("seconds", "num", "")]
    columns += [(f"noisy {METRIC_LABELS[m]}", "num", "") for m in METRICS]
    for name in names:
        columns += [(f"{name} {METRIC_LABELS[m]}", "num", "") for m in METRICS]
        columns += [(f"{name} gain PESQ-WB", "num", "")]
        if any(r["systems"][name]["noise_removed_db"] is not None for r in report["files"]):
            columns += [(f"{name} {METRIC_LABELS[k]}", "num", "") for k in DECOMPOSITION]
    head = "<tr>" + "".join(f'<th class="{cls}" data-type="{kind}">{_e(label)}</th>'
                            for label, kind, cls in columns) + "</tr>"
    body = []
    for r in report["files"]:
        cells = [f'<td class=l data-v="{_e(r["id"])}">{_e(r["id"])}</td>', _num_td(r["snr_db"], 0),
                 f'<td class=l>{_e(r["group"] or "")}</td>', _num_td(r["seconds"], 1)]
        cells += [_num_td(r["noisy"][m], DIGITS[m]) for m in METRICS]
        for name in names:
            s = r["systems"][name]
            out = s["processed"] or {}
            cells += [_num_td(out.get(m), DIGITS[m]) for m in METRICS]
            cells.append(_num_td(out["pesq_wb"] - r["noisy"]["pesq_wb"] if out else None, 2))
            if any(x["systems"][name]["noise_removed_db"] is not None for x in report["files"]):
                cells += [_num_td(s[k], DIGITS[k]) for k in DECOMPOSITION]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<table class=sortable id=files><thead>{head}</thead><tbody>" + "\n".join(body)
            + "</tbody></table>")


def _listening_section(report: dict[str, Any], chosen: list[tuple[str, str]], media: Path) -> str:
    if not chosen:
        return ""
    from .plot import colour_bar_png, spectrogram_png

    colour_bar_png(media / "colour-scale.png")
    names = [s["name"] for s in report.get("systems", [])]
    rows = {r["id"]: r for r in report["files"]}
    parts = ["<h2>Listen</h2><p class=muted>Worst and best pairs by the first system's PESQ-WB gain, and some "
             "at random. Audio as scored: 16 kHz mono. Spectrograms in dBFS:</p>"
             '<img src="media/colour-scale.png" alt="colour scale: -100 to 0 dBFS">']
    for index, (pair_id, why) in enumerate(chosen):
        signals = report["_signals"][pair_id]
        row = rows[pair_id]
        versions = [("noisy input", "noisy", row["noisy"])]
        versions += [(name, name, {**row["systems"][name]["processed"], **row["systems"][name]}) for name in names]
        versions.append(("clean reference", "clean", None))
        clips = []
        for label, key, scores in versions:
            stem = f"{index:02d}-{_slug(pair_id)}-{_slug(key)}"
            _write_flac(media / f"{stem}.flac", signals[key])
            spectrogram_png(signals[key], SAMPLE_RATE, media / f"{stem}.png")
            shown = [m for m in (*METRICS, *DECOMPOSITION) if scores and scores.get(m) is not None]
            detail = " &middot; ".join(f"{METRIC_LABELS[m]} {_fmt(scores[m], DIGITS[m])}" for m in shown) or "&nbsp;"
            clips.append(f'<div class=clip><b>{_e(label)}</b><span class="muted scores">{detail}</span>'
                         f'<img src="media/{stem}.png" alt="spectrogram of {_e(label)}">'
                         f'<audio controls preload=metadata src="media/{stem}.flac"></audio></div>')
        snr = "" if row["snr_db"] is None else f", input SNR {row['snr_db']:g} dB"
        parts.append(f'<div class=pair id="pair-{_slug(pair_id)}"><h3>{_e(pair_id)} ({why}{snr})</h3>'
                     f'<div class=clips>{"".join(clips)}</div></div>')
    return "".join(parts)


def _write_flac(path: Path, x: np.ndarray) -> None:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(np.asarray(x, dtype=np.float64), -1.0, 1.0), SAMPLE_RATE, format="FLAC",
             subtype="PCM_16")
    outputs.write_bytes(path, buffer.getvalue())


# -- cells -----------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60] or "x"


def _fmt(value: float | None, digits: int) -> str:
    return "" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _num_td(value: float | None, digits: int) -> str:
    if value is None or not math.isfinite(value):
        return '<td data-v=""></td>'
    return f'<td data-v="{value!r}">{value:.{digits}f}</td>'


def _mean_cell(ci: dict | None, metric: str) -> str:
    if ci is None:
        return "&ndash;"
    digits = DIGITS[metric]
    spread = "" if not math.isfinite(ci["ci95"]) else f" &plusmn; {ci['ci95']:.{digits}f}"
    return f"{_fmt(ci['mean'], digits)}{spread} <span class=muted>(n={ci['n']})</span>"


def _gain_cell(ci: dict | None, metric: str) -> str:
    if ci is None:
        return ""
    digits = DIGITS[metric]
    shown = round(ci["mean"], digits)
    cls = "up" if shown > 0 else "down" if shown < 0 else "muted"
    spread = "" if not math.isfinite(ci["ci95"]) else f" &plusmn; {ci['ci95']:.{digits}f}"
    return f'<span class={cls}>{shown + 0.0:+.{digits}f}{spread}</span>'
