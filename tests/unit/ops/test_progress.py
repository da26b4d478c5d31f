"""What the demo prints while the nightly DAG runs: one line per finished task, with its figure."""

from __future__ import annotations

import io
import json
from datetime import date
from pathlib import Path

from rankflow.config import Settings, load_settings
from rankflow.ops.progress import Bar, TaskLines, key_figure, run_logged
from rankflow.runs import write_run_record

DS = date(2026, 10, 30)


def settings_in(tmp_path: Path) -> Settings:
    return load_settings({"RANKFLOW_HOME": str(tmp_path / "home")})


def test_each_finished_task_prints_once_and_a_half_written_line_waits(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    write_run_record(settings, DS, "candidates", {"rows": 900, "users": 15189})
    progress = tmp_path / "progress.jsonl"
    out = io.StringIO()
    lines = TaskLines(settings, DS, "home", progress, out)
    lines.poll()  # no file yet: nothing
    first = {"task": "candidates", "map_index": -1, "state": "success", "seconds": 20.5}
    progress.write_text(json.dumps(first) + "\n" + '{"task": "trai')
    lines.poll()
    assert out.getvalue().split() == ["candidates", "success", "20.5s", "15,189", "users"]
    with progress.open("a") as appended:
        appended.write('n", "map_index": -1, "state": "failed", "seconds": 3.0}\n')
        appended.write(json.dumps({"dag_run": "manual__x", "state": "failed"}) + "\n")
    lines.poll()
    lines.poll()
    printed = out.getvalue().splitlines()
    assert len(printed) == 2
    assert printed[1].split() == ["train", "failed", "3.0s"]  # a failed task shows no figure
    assert lines.run_state == "failed"


def test_key_figures_come_from_the_run_records(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    assert key_figure(settings, DS, "home", "evaluate") == ""  # no record (yet)
    assert key_figure(settings, DS, "home", "check_params") == ""  # a task without a record
    gate = {"promote": False, "metric": "ndcg@10", "challenger": 0.49512}
    write_run_record(settings, DS, "evaluation", {"gate": gate, "rows": 37000})
    write_run_record(settings, DS, "publish-redis-home", {"users": 15189, "version": "v7"})
    write_run_record(settings, DS, "monitor-home", {"figures": 61, "breaches": [{"m": 1}]})
    assert key_figure(settings, DS, "home", "evaluate") == "ndcg@10 0.4951 on 37,000 rows, rejected"
    assert key_figure(settings, DS, "home", "publish_redis") == "15,189 users, version v7"
    assert key_figure(settings, DS, "home", "monitor") == "61 figures, 1 breached"
    assert key_figure(settings, DS, "search", "monitor") == ""  # another surface's record


def test_a_bar_off_a_terminal_prints_only_its_result() -> None:
    out = io.StringIO()
    bar = Bar("raw drops", out)
    bar.update(3, 30, "days")
    bar.finish("done")
    assert out.getvalue() == "raw drops      done\n"
    assert "[###" in bar.render(10, 30, "days")


def test_a_child_s_output_goes_to_the_log_and_with_verbose_to_the_terminal_too(
    tmp_path: Path, capsys
) -> None:
    command = ["sh", "-c", "echo chatter; echo warning >&2; exit 3"]
    polls: list[bool] = []
    for verbose in (False, True):
        log_path = tmp_path / f"verbose-{verbose}.log"
        with log_path.open("a") as log:
            status = run_logged(
                command, log, verbose=verbose, while_running=lambda: polls.append(True)
            )
        assert status == 3
        logged = log_path.read_text()
        assert "chatter" in logged
        assert "warning" in logged
        assert polls  # polled at least once, after the end
        polls.clear()
        shown = capsys.readouterr().out
        assert ("chatter" in shown) is verbose
