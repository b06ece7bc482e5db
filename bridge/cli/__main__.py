"""``python -m bridge.cli`` (what ``bridge run`` starts its worker with)."""

from bridge.cli import main

main()
