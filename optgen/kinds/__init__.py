"""The registry of kinds: every fact about a block, map, solver or model part lives in its entry."""
