"""The napari layer: docks, the annotation controller they subscribe to, the worker host."""
