"""The machine capability graph context: one aggregate per machine holding its nodes and edges."""
