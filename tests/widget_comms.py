"""Testing widgets without a browser: a comm that records what would go to the front end,
and messages as the front end would send them (the habit of anywidget's own tests)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import comm
import ipywidgets
import pytest


class RecordingComm(comm.DummyComm):
    """A comm that keeps every message the kernel side publishes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        super().__init__(*args, **kwargs)

    def publish_msg(self, msg_type: str, data: Any = None, metadata: Any = None, **keys: Any):
        self.sent.append({"type": msg_type, "data": data or {}})


class Comms:
    """Every comm opened while the fixture is active."""

    def __init__(self) -> None:
        self.opened: list[RecordingComm] = []

    def create(self, *args: Any, **kwargs: Any) -> RecordingComm:
        made = RecordingComm(*args, **kwargs)
        self.opened.append(made)
        return made

    def of(self, widget: ipywidgets.Widget) -> RecordingComm:
        """The comm of ``widget``."""
        assert isinstance(widget.comm, RecordingComm)
        return widget.comm

    def updates(self, widget: ipywidgets.Widget, key: str) -> list[Any]:
        """Values of ``key`` the widget sent to the front end, in order (opening included)."""
        out = []
        for msg in self.of(widget).sent:
            state = msg["data"].get("state", {})
            if key in state:
                out.append(state[key])
        return out


@pytest.fixture
def comms(monkeypatch: pytest.MonkeyPatch) -> Iterator[Comms]:
    """Record the messages widgets made in the test publish."""
    recorder = Comms()
    monkeypatch.setattr(ipywidgets.widgets.widget.comm, "create_comm", recorder.create)
    yield recorder


def frontend_update(widget: ipywidgets.Widget, **state: Any) -> None:
    """Deliver a state update as the front end sends it (e.g. a click on a DAG node)."""
    widget._handle_msg({"content": {"data": {"method": "update", "state": state}}, "buffers": []})
