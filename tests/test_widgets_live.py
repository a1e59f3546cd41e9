"""Displays stay true to what they claim (issue 17, truth and liveness), without a browser:
each display has a widget of its own, a flow's display follows its latest run wherever it
was started, a run's display that run; running steps tick and pulse only when live, steps
not reached yet say ``waiting``; the store's change token moves with every write."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import threading

import pytest
from waiting import GENEROUS, wait_for
from widget_comms import comms  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.api import progress
from nbflow.widgets import display as widget_display
from nbflow.widgets.live import LiveRun
from nbflow.widgets.preview import run_header
from nbflow.widgets.states import DagSpec, NodeInfo, NodeState, with_waiting
from nbflow.widgets.svg import render_svg
from nbflow.widgets.watch import Watch, Watcher, watcher


def gated(store: nf.Store, name: str = "gated") -> tuple[nf.Flow, threading.Event]:
    """first -> slow -> last, where ``slow`` runs until the test opens the gate."""
    flow = nf.Flow(name, store=store)
    gate = nf.untracked(threading.Event())

    @flow.step
    def first():
        return 1

    @flow.step
    def slow(first):
        assert gate.wait(GENEROUS), "the gate never opened"
        return first + 1

    @flow.step
    def last(slow):
        return slow + 1

    return flow, gate


def test_a_flow_display_follows_a_background_run_to_its_end(store, comms):
    flow, gate = gated(store)
    run = flow.run(background=True, progress=False)
    wait_for(lambda: run.record.status.value == "running", "the run started")
    widget = flow.show()
    wait_for(lambda: widget.states.get("slow") == "running", "slow shown running")
    assert "running" in widget.title and run.id in widget.title
    assert widget.infos["last"].label == "waiting"  # not reached yet, not "never run"
    gate.set()
    run.wait(GENEROUS)
    wait_for(lambda: "completed" in widget.title, "the display saying the run completed")
    assert widget.states == {"first": "completed", "slow": "completed", "last": "completed"}


def test_each_display_keeps_its_meaning(store, comms):
    flow, gate = gated(store)
    gate.set()
    before = flow.show()
    assert before.title == "gated · never run"
    first = flow.run(progress=False)
    pinned = flow.show(first)  # claims run `first`
    second = flow.run(progress=False)
    latest = flow.show()
    assert len({id(before), id(pinned), id(latest)}) == 3  # a widget per display
    assert second.id in latest.title and "latest" in latest.title
    assert first.id in pinned.title and second.id not in pinned.title
    # The display made before any run claims "the latest run": it now shows it.
    wait_for(lambda: second.id in before.title, "the first display following the latest run")


def test_a_run_s_display_shows_that_run(store, comms, monkeypatch):
    flow, gate = gated(store)
    gate.set()
    first = flow.run(progress=False)
    widget = widget_display.run_widget(first)
    flow.run(progress=False)
    assert first.id in widget.title
    assert widget_display.run_widget(first) is not widget


def test_displays_are_followed_by_one_thread_that_ends_when_they_close(store, comms):
    flow, gate = gated(store)
    gate.set()
    flow.run(progress=False)
    widgets = [flow.show() for _ in range(5)]
    names = [t.name for t in threading.enumerate()]
    assert names.count("nbflow-watch") == 1
    for widget in widgets:
        widget.close()
    wait_for(lambda: not watcher().running, "the watcher thread ending")
    assert "nbflow-watch" not in [t.name for t in threading.enumerate()]


def quiet(store: nf.Store, watcher: Watcher) -> None:
    """Wait until the store is at rest: a DuckDB file given back after its idle time (the
    close checkpoints the log into the file, a change of the file) and a round of the
    watcher after that."""
    releases = getattr(store, "idle_release", None) is not None
    wait_for(lambda: not (releases and getattr(store, "connected", False)), "the store at rest")
    loops = watcher.loops
    watcher.poke()
    wait_for(lambda: watcher.loops > loops + 1, "a round of the watcher after that")


def test_the_watcher_checks_only_when_the_store_changed(store, comms):
    checks: list[int] = []
    alive = [True]
    own = Watcher(interval=0.02, min_gap=0.0)
    own.add(Watch(store, lambda: checks.append(1) or True, lambda: alive[0]))
    flow, gate = gated(store)
    gate.set()
    flow.run(progress=False)
    wait_for(lambda: checks, "a check after the store changed")
    quiet(store, own)
    settled = len(checks)
    # Reads change nothing: however many rounds pass, nothing more is checked.
    flow.latest_run()
    store.list_runs()
    quiet(store, own)
    loops = own.loops
    own.poke()
    wait_for(lambda: own.loops >= loops + 5, "five more rounds")
    assert len(checks) == settled
    flow.run(progress=False)  # a write: checked again
    wait_for(lambda: len(checks) > settled, "a check after the next run")
    alive[0] = False
    wait_for(lambda: not own.running, "the watcher ending with nothing to watch")


def test_the_change_token_moves_with_every_write(store):
    before = store.change_token()
    flow = nf.Flow("token", store=store)

    @flow.step
    def one():
        return 1

    run = flow.run(progress=False)
    after = store.change_token()
    assert after != before
    assert store.change_token() == after  # reading changes nothing
    run.fork(from_step="one", progress=False)
    assert store.change_token() != after


def test_a_duckdb_file_s_token_sees_another_process_write_without_a_connection(tmp_path):
    path = tmp_path / "shared.duckdb"
    store = nf.open_store(path)
    token = store.change_token()
    store.release_connection()  # the other process needs the file
    script = (
        "import nbflow as nf\n"
        f"f = nf.Flow('elsewhere', store=nf.open_store({str(path)!r}))\n"
        "@f.step\n"
        "def one(): return 1\n"
        "f.run(progress=False)\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=GENEROUS * 2)
    assert not store.connected
    assert store.change_token() != token
    assert not store.connected  # the token needed no connection
    assert [r.flow for r in store.list_runs()] == ["elsewhere"]
    store.close()


def test_steps_not_reached_in_a_live_run_say_waiting():
    infos = {"a": NodeInfo(NodeState.COMPLETED)}
    live = with_waiting(infos, ("a", "b"), True)
    assert live["b"].caption == "waiting" and live["a"].state is NodeState.COMPLETED
    assert "b" not in with_waiting(infos, ("a", "b"), False)


def test_a_running_node_ticks_and_pulses_only_when_live():
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=3)
    spec = DagSpec(("a",), ())
    info = {"a": NodeInfo(NodeState.RUNNING, started_at=started)}
    from nbflow.widgets.layout import layout
    from nbflow.widgets.svg import draw

    now = draw(layout(spec), info, live=True)
    assert "<animate" in now and 'class="caption ticking"' in now
    elapsed = float(now.split('data-elapsed="')[1].split('"')[0])
    assert 3000 <= elapsed < 3000 + GENEROUS * 1000
    assert "running · 3." in now or "running · " in now
    past = draw(layout(spec), info, live=False)
    assert "<animate" not in past and "ticking" not in past
    assert "<animate" in render_svg(spec, info)  # (live by default)


def test_the_progress_line_ticks_between_commits_and_stops_at_the_end(store, comms):
    flow, gate = gated(store)
    views: list[LiveRun] = []

    def factory(run, graph, done):
        views.append(LiveRun(run, graph, done, interval=0.0))
        return views[-1]

    with progress.progress_view(factory):
        run = flow.run(background=True)
    view = wait_for(lambda: views and views[0], "the live view")
    wait_for(lambda: view.dag.states.get("slow") == "running", "slow running")
    first = view.label.value
    wait_for(lambda: view.label.value != first, "the clock moving while slow runs")
    assert "1 of 3 steps" in view.label.value
    gate.set()
    run.wait(GENEROUS)
    wait_for(lambda: view.follower.finished, "the last redraw")
    assert "3 of 3 steps" in view.label.value
    wait_for(lambda: view._ticker is None, "the clock stopped")
    # Its last tick may still be returning: the thread ends by itself, soon.
    wait_for(
        lambda: "nbflow-tick" not in [t.name for t in threading.enumerate()],
        "the clock's thread ended",
    )


def test_the_done_count_never_goes_back_during_a_resume(store, comms):
    flow = nf.Flow("resumed", store=store)
    fail = [True]

    @flow.step
    def a():
        return 1

    @flow.step
    def b(a):
        if fail[0]:
            raise ValueError("not yet")
        return a

    failed = flow.run(raise_on_error=False, progress=False)
    fail[0] = False
    counts: list[int] = []
    views: list[LiveRun] = []

    def factory(run, graph, done):
        view = LiveRun(run, graph, done, interval=0.0)
        views.append(view)
        original = view._update

        def recording(state, finished):
            original(state, finished)
            counts.append(view.bar.value)

        view.follower._update = recording
        return view

    with progress.progress_view(factory):
        failed.resume()
    assert counts and counts == sorted(counts) and counts[-1] == 2


def test_took_is_the_wall_time_of_a_fully_cached_run(store):
    flow, gate = gated(store)
    gate.set()
    flow.run(progress=False)
    cached = flow.run(progress=False)
    record = cached.record
    assert record.duration_s is not None and record.finished_at is not None
    wall = (record.finished_at - record.created_at).total_seconds()
    header = run_header(record)
    took = header.split("took</th><td>")[1].split("<")[0]
    from nbflow.widgets.states import format_duration

    assert took == format_duration(wall * 1000)


@pytest.fixture(autouse=True)
def _no_watch_left(comms):
    yield
    for watch in watcher().watches:
        watch.alive = lambda: False


# -- the browser -------------------------------------------------------------------------------


def row_status(browser, run_id: str) -> str:
    return next((r["status"] for r in browser.runs.rows if r["key"] == run_id), "")


def test_a_fork_s_header_table_slider_and_dag_move_together(store, comms):
    flow, gate = gated(store)
    gate.set()
    parent = flow.run(progress=False)
    browser = nf.browse(flow)
    try:
        gate.clear()  # the fork's `slow` waits
        browser.fork.step.value = "slow"
        browser.fork.press()
        forked = browser.run
        assert forked is not None and forked.id != parent.id
        wait_for(lambda: browser.dag.states.get("slow") == "running", "slow running in the DAG")

        def together():
            record = store.get_run(forked.id)
            version = browser.version.value
            return (
                "running" in browser.header.value
                and f"version {version}" in browser.header.value
                and row_status(browser, forked.id) == "running"
                and browser.version.options[-1][1] == version
                and f"version {version} of {version}" in browser.version_label.value
                and version >= 2
                and record.version >= version
            )

        wait_for(together, "header, table, slider and DAG on the same version")
        assert browser.dag.infos["last"].label == "waiting"
        gate.set()
        wait_for(lambda: row_status(browser, forked.id) == "completed", "the row completed")
        wait_for(lambda: "completed" in browser.dag.title, "the DAG completed")
    finally:
        gate.set()
        browser.close()


def test_the_fork_panel_keeps_the_step_the_user_chose(store, comms):
    flow, gate = gated(store)
    gate.set()
    flow.run(progress=False)
    browser = nf.browse(flow)
    try:
        from widget_comms import frontend_update

        frontend_update(browser.dag, selected="first")  # selected in the DAG...
        browser.fork.step.value = "last"  # ...then the user picks another step
        assert "runs last" in browser.fork.plan.value
        browser.fork.press()
        forked = browser.run
        wait_for(lambda: row_status(browser, forked.id) == "completed", "the fork completed")
        wait_for(lambda: "completed" in browser.fork.status.value, "the panel's last word")
        assert browser.fork.step.value == "last"
        assert browser.dag.selected == "first"
    finally:
        browser.close()


def test_the_browser_shows_runs_started_elsewhere_by_itself(store, comms):
    flow, gate = gated(store)
    gate.set()
    first = flow.run(progress=False)
    browser = nf.browse(flow)
    try:
        assert browser.runs.row_keys == [first.id]
        gate.clear()
        other = flow.run(background=True, progress=False)  # "another cell"
        wait_for(lambda: other.id in browser.runs.row_keys, "the new run in the table")
        assert browser.run is not None and browser.run.id == first.id  # selection kept
        gate.set()
        other.wait(GENEROUS)
        wait_for(lambda: row_status(browser, other.id) == "completed", "its row completed")
    finally:
        gate.set()
        browser.close()
    wait_for(lambda: browser._watch not in watcher().watches or not watcher().running, "unwatched")


def test_time_travel_in_the_browser_does_not_pulse(store, comms):
    flow, gate = gated(store)
    gate.set()
    run = flow.run(progress=False)
    browser = nf.browse(flow)
    try:
        running_at = next(
            e.seq for e in store.read_events(run.id) if e.type.value == "step_started"
        )
        versions = [v for _, v in browser.version.options]
        browser.version.value = max(v for v in versions if v <= running_at)
        assert "running" in browser.dag.states.values()
        assert "<animate" not in browser.dag.svg and "ticking" not in browser.dag.svg
    finally:
        browser.close()


def test_a_flow_display_follows_a_run_started_by_another_process(tmp_path, comms):
    path = tmp_path / "shared.duckdb"
    store = nf.open_store(path)
    flow = nf.Flow("shared", store=store)

    @flow.step
    def one():
        return 1

    mine = flow.run(progress=False)
    widget = flow.show()
    assert mine.id in widget.title
    script = (
        "import nbflow as nf\n"
        f"f = nf.Flow('shared', store=nf.open_store({str(path)!r}))\n"
        "@f.step\n"
        "def one(): return 2\n"  # other code: it runs, it is not cached
        "print(f.run(progress=False).id)\n"
    )
    # The other process waits for the file; this one hands it over once idle.
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=GENEROUS * 2
    )
    assert done.returncode == 0, done.stderr
    theirs = done.stdout.strip().splitlines()[-1]
    # (It may be seen mid-way first, pending or running: the end is seen at the next round.)
    wait_for(
        lambda: theirs in widget.title and "completed" in widget.title,
        "the display showing the other process's run, completed",
    )
    widget.close()
    store.close()


def test_a_closed_store_s_displays_are_no_longer_followed(tmp_path, comms):
    store = nf.open_store(tmp_path / "closing.duckdb")
    flow = nf.Flow("closing", store=store)

    @flow.step
    def one():
        return 1

    flow.run(progress=False)
    widget = flow.show()
    assert any(w.store is store for w in watcher().watches)
    store.close()
    watcher().poke()
    wait_for(lambda: not any(w.store is store for w in watcher().watches), "the watch dropped")
    widget.close()
