"""Adapting a model to the user's own images: supervised fine-tuning on labelled objects,
then preference alignment (DPO) on unlabelled ones; the result is an adapter file."""
