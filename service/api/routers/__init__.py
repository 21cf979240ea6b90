"""One router per resource: health, model, collections, their stored examples, embed; and
metrics."""
