"""Interactive explorer of an analysed run (``python -m scripts.explore``): data access
(:mod:`.data`), the Bokeh page (:mod:`.app`), the server with its thumbnail routes
(:mod:`.server`), and the standalone map written into the report (:mod:`.standalone`)."""
