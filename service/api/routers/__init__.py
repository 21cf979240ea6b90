"""One router per resource: health, model, collections, embed; and metrics."""
