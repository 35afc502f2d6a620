"""Process memory settings of the command-line tool (NeonatalBrainLib.runtime)."""
from __future__ import annotations

import json
import platform
import subprocess
import sys

from NeonatalBrainLib.batch import run_batch

_PROBE = """
import json
from NeonatalBrainLib.runtime import configure_process_memory, numpy_hugepage_switch
switch = numpy_hugepage_switch()
before = switch(True)      # returns the previous setting
applied = configure_process_memory()
after = switch(False)
print(json.dumps({"applied": applied, "advice_before": bool(before), "advice_after": bool(after)}))
"""


def test_configure_process_memory_turns_numpy_hugepage_advice_off_and_sets_glibc():
    # in a child process: the settings are process-wide
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, check=True)
    got = json.loads(out.stdout)
    assert got["advice_before"] is True and got["advice_after"] is False
    assert got["applied"]["numpy_hugepage_advice_off"] is True
    glibc = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    assert got["applied"]["glibc_heap_reuse"] is glibc


def _hugepage_advice_worker(case_id, *, out_dir):
    import os

    from NeonatalBrainLib.runtime import numpy_hugepage_switch

    previous = numpy_hugepage_switch()(False)   # read (and keep off)
    os.makedirs(out_dir)
    return {"hugepage_advice": int(bool(previous))}


def test_default_batch_workers_get_the_cli_memory_settings(tmp_path):
    from NeonatalBrainLib.runtime import numpy_hugepage_switch

    # this process with numpy's default (advice on; an in-process CLI test may have turned it
    # off), so a forked worker reports off only if the pool's initializer turned it off
    switch = numpy_hugepage_switch()
    previous = switch(True)
    try:
        res = run_batch([("a",)], _hugepage_advice_worker, tmp_path, jobs=1)
    finally:
        switch(previous)
    assert res[0]["status"] == "done"
    assert (tmp_path / "metrics.csv").read_text().splitlines()[1].endswith(",0")


def _advice_now() -> bool:
    from NeonatalBrainLib.runtime import numpy_hugepage_switch

    switch = numpy_hugepage_switch()
    state = bool(switch(True))
    switch(state)
    return state


def test_hugepage_advice_off_during_a_library_call_and_restored_after(monkeypatch):
    import numpy as np
    import pytest

    from NeonatalBrainLib.imageio import InputError, Volume
    from NeonatalBrainLib.runtime import numpy_hugepage_switch
    from NeonatalVesselsLib import pipeline

    seen = []

    def probe(*args, **kwargs):
        seen.append(_advice_now())
        raise InputError("probe")

    monkeypatch.setattr(pipeline, "_prepare", probe)
    switch = numpy_hugepage_switch()
    previous = switch(True)
    try:
        for setting in (True, False):
            switch(setting)
            swi = Volume(np.random.default_rng(0).random((8, 8, 8)).astype(np.float32) + 1.0, np.eye(4))
            with pytest.raises(InputError, match="probe"):
                pipeline.run_vessel_analysis(swi)
            with pytest.raises(InputError, match="probe"):
                pipeline.measure_vessel_mask(swi, np.zeros((8, 8, 8), np.uint8))
            assert seen[-2:] == [False, False]          # off inside both entry points
            assert _advice_now() is setting            # the process's own setting back, after an error too
    finally:
        switch(previous)


def test_hugepage_advice_restored_after_the_last_of_overlapping_calls():
    import threading

    from NeonatalBrainLib.runtime import numpy_hugepage_advice_off, numpy_hugepage_switch

    switch = numpy_hugepage_switch()
    previous = switch(True)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    states = {}

    def first():
        with numpy_hugepage_advice_off():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second():
        first_in.wait(5)
        with numpy_hugepage_advice_off():
            second_in.set()
            first_out.wait(5)
            states["after_first_left"] = _advice_now()

    try:
        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        states["after_both"] = _advice_now()
    finally:
        switch(previous)
    assert states == {"after_first_left": False, "after_both": True}
