"""Getting photos and videos into the face index: file discovery, batch runs, the CLI."""
