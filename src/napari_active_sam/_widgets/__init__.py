"""The napari layer: the dock widget, its workers, layers and key bindings."""
