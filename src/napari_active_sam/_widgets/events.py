"""The events of :class:`~.controller.AnnotationController`, which the docks listen to."""

EVENTS = {
    "status": "(message) a line for the status bar",
    "progress": "(step) Progress of encoding, propagation, learning or a quality check",
    "busy": "(value) whether work that cancel_all stops is running",
    "offered": "(suggestions) the suggestions on offer changed (best first; may be empty)",
    "model_kept": "(request) the chosen model failed to load: the ModelRequest still in use",
    "acquisition": "(value) the acquisition switched to by the controller (BALD needs a head)",
    "session_ready": "(session, new_image) a session is ready on an image and the layers "
    "exist; new_image: on another image than the session before (not a new model or window)",
    "answered": "(index, prompts, answer) drawn; answers overtaken by newer prompts are not",
    "uncertain_slices": "(ranked) [(index, score), ...] most uncertain first; None in 2D",
    "committed": "(label) an object was written into the output layer",
    "objects_removed": "() the output layer was removed, with every object in it",
    "propagated": "(label, slices, stops) object label was grown through the volume: how "
    "sure the model was on each slice it decoded (slice → core.annotate.volume.SliceReport) "
    "and why growth stopped",
    "quality_checked": "(found, label) predicted Dice of object label, or of all if None",
    "measured": "(found, unit) every committed object measured: core.quality.measure."
    "Measurement per object, volumes in unit (mm³, or mm² for a 2D image)",
    "learned": "(head, path) a Bayesian head was fitted on the committed objects and saved",
    "candidates": "(count, first) objects like the committed ones on offer in the candidates "
    "layer, and the first of them (the one A, D and S answer; None when none is left)",
    "to_rank": "(candidates) four candidate masks of one object for the user to rank",
    "adapter_found": "(adaptation) an adapter the user made earlier for this model is on offer",
    "adapted": "(adaptation) the model was adapted to the committed objects and now decodes "
    "(jobs.Adaptation: the model, its head, where the adapter went, held-out figures)",
    "not_adapted": "(adaptation) no training step raised the held-out objects' IoU: the "
    "model in use stays, nothing was saved (jobs.Adaptation with improved False)",
    "error": "(error) a job failed; one the user can act on is also in status and a "
    "notification, anything else is raised again",
}
"""The controller's events: name → "(attributes) meaning"."""
