"""One router per resource: health, the model catalog, translate, bulk jobs and the web page."""
