"""The Flask search page and JSON API (see the web issue); builds on ``search_engine`` only."""
