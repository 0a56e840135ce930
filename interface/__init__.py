"""interface package."""
