"""application/engine package."""
