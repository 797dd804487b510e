"""One router per resource: health, models, translate, and the web page."""
