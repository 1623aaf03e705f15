"""Open an Agent folder with its on-disk component store.

`teep_coap.protocol.agentstate.AgentState` reads keys and configuration but does not pick a component
store (the protocol layer does not import `store`); these two calls plug in `ComponentStore`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from teep_coap.protocol.agentstate import AgentState
from teep_coap.protocol.ports import AgentComponents
from teep_coap.store.components import ComponentStore


def open_component_store(folder: Path) -> AgentComponents:
    """The Agent's installed components in DIR/components (atomic on disk)."""
    return ComponentStore(folder)


def load_agent_state(root: str | os.PathLike[str]) -> AgentState:
    """Read the Agent folder `root` (made by `teep-coap agent init`)."""
    return AgentState.load(root, open_component_store)


def init_agent_state(root: str | os.PathLike[str], *args: Any, **kwargs: Any) -> AgentState:
    """Create a new Agent folder; arguments as `AgentState.init` (tam key, alg, keyword options)."""
    return AgentState.init(root, *args, open_components=open_component_store, **kwargs)
