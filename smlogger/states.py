"""Link states of a source, the one list every layer uses (pipeline, live state, web page).

The page never retypes them: the server renders the labels into the page's initial JSON and
app.js reads them from there.
"""

from __future__ import annotations

from typing import Literal, get_args

# connected: frames arrive; waiting: the device is not open (yet); no data: open but silent
LinkState = Literal["connected", "waiting", "no data"]

# what a source is before it reported anything
INITIAL_LINK_STATE: LinkState = "waiting"

# best first: a meter fed by several sources shows the worst (highest index) of their states
LINK_STATES: tuple[LinkState, ...] = get_args(LinkState)

LINK_STATE_LABELS: dict[LinkState, str] = {
    "connected": "Connected",
    "waiting": "Waiting for data",
    "no data": "No data",
}

# not a source state: the page shows it when it cannot reach the server
PAGE_OFFLINE_STATE = "offline"
PAGE_OFFLINE_LABEL = "Server unreachable"


def state_rank(state: object) -> int:
    """Position of `state` in LINK_STATES (best first); unknown states rank worst."""
    for rank, known in enumerate(LINK_STATES):
        if state == known:
            return rank
    return len(LINK_STATES)


def page_link_states() -> dict[str, object]:
    """What the page needs to show link states: labels (with its own offline), initial, offline."""
    labels: dict[str, str] = {str(state): label for state, label in LINK_STATE_LABELS.items()}
    labels[PAGE_OFFLINE_STATE] = PAGE_OFFLINE_LABEL
    return {"labels": labels, "initial": INITIAL_LINK_STATE, "offline": PAGE_OFFLINE_STATE}
