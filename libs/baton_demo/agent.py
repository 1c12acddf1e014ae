"""`python -m baton_demo.agent --kind KIND [--fault-plan PLAN]`: an agent service with the demo's faults injected."""

from __future__ import annotations

import sys

from baton_demo.service import main

if __name__ == "__main__":
    main(["agent", *sys.argv[1:]], prog="python -m baton_demo.agent")
