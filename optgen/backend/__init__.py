"""From the checked IR to Python: the typed plan, its passes, lowering, the writer, emission."""
