"""vidpipe's stages, one package each: `handlers.py` holds the logic, `app.py` the wiring."""
