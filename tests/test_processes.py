"""Worker processes from a script without `if __name__ == "__main__":` fail with a clear error, before any work."""

from __future__ import annotations

import runpy
import subprocess
import sys
import textwrap

import pytest
from conftest import speech_like, write_audio

from audiodenoise.errors import ConfigError
from audiodenoise.processes import _is_guarded, check_main_guard

BATCH = """
from functools import partial
from audiodenoise import Denoiser
from audiodenoise.batch import BatchPlan, run_batch

plan = BatchPlan.from_folder({raw!r}, {clean!r})
{guard}summary = run_batch(plan, partial(Denoiser.from_file, {model!r}), jobs=2)
{guard}print("SUMMARY", summary.describe())
"""

EVALUATE = """
from audiodenoise.evaluate import evaluate
report = evaluate({noisy!r}, {noisy!r}, denoised_dir={noisy!r}, jobs=2, progress=False)
print("REPORT", report["n_pairs"])
"""


def _script(tmp_path, text: str, **values) -> str:
    path = tmp_path / "script.py"
    path.write_text(textwrap.dedent(text).format(**values))
    return str(path)


def _run(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script], capture_output=True, text=True, timeout=300)


@pytest.fixture
def folders(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        write_audio(raw / f"f{i}.wav", speech_like(16000, 0.3, seed=i), 16000)
    return raw, tmp_path / "clean"


def test_an_unguarded_batch_script_fails_before_any_work(tmp_path, folders, tiny_model_file):
    raw, clean = folders
    proc = _run(_script(tmp_path, BATCH, raw=str(raw), clean=str(clean), model=str(tiny_model_file), guard=""))
    assert proc.returncode == 1
    assert "SUMMARY" not in proc.stdout  # neither here nor in a worker
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("audiodenoise.errors.ConfigError: run_batch(jobs=2) starts worker processes")
    assert "script.py, line 7, calls it at the top level" in last and 'if __name__ == "__main__":' in last
    assert "BrokenProcessPool" not in proc.stderr
    assert not clean.exists()


def test_the_guard_is_recognised_in_its_usual_forms(tmp_path):
    script = tmp_path / "s.py"
    script.write_text(textwrap.dedent("""\
        import sys
        run()
        if __name__ == "__main__":
            run()
        if '__main__' == __name__ and len(sys.argv) > 0:
            run()
        def main():
            run()
        """))
    assert [_is_guarded(script, line) for line in (2, 4, 6, 8)] == [False, True, True, False]


def test_an_unguarded_evaluate_script_fails_with_the_same_message(tmp_path, folders):
    pytest.importorskip("pesq")
    raw, _ = folders
    proc = _run(_script(tmp_path, EVALUATE, noisy=str(raw)))
    assert proc.returncode == 1 and "REPORT" not in proc.stdout
    assert "ConfigError: evaluate(jobs=2) starts worker processes" in proc.stderr
    assert "BrokenProcessPool" not in proc.stderr


def test_a_worker_importing_the_script_again_is_refused(tmp_path):
    # what spawn and forkserver do in each worker: run the main script as __mp_main__
    script = tmp_path / "again.py"
    script.write_text("from audiodenoise.processes import check_main_guard\ncheck_main_guard('run_batch(jobs=4)')\n")
    with pytest.raises(ConfigError, match="a worker process is importing the script again"):
        runpy.run_path(str(script), run_name="__mp_main__")


def test_calls_from_functions_and_guarded_code_pass():
    check_main_guard("run_batch(jobs=2)")  # pytest's own main script is guarded
