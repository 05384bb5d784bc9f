"""The Bokeh server of the explorer: the page at ``/`` and two small PNG routes that
the browser calls only for the images it shows (hover, realism list):
``/thumb/<position>.png`` (an embedded image, by its position in the run's table) and
``/new/<index>.png`` (a FITS file added in this server's lifetime)."""
from __future__ import annotations

import logging

from tornado.web import HTTPError, RequestHandler

from scripts.explore.app import build_document, session_arguments
from scripts.explore.data import RunData

logger = logging.getLogger(__name__)

#: Addresses that do not expose the explorer beyond this machine.
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class _PNGHandler(RequestHandler):
    def initialize(self, data: RunData):
        self.data = data

    def png(self, index: int) -> bytes:
        raise NotImplementedError

    def get(self, index: str):
        try:
            content = self.png(int(index))
        except (IndexError, KeyError, ValueError):
            raise HTTPError(404) from None
        self.set_header("Content-Type", "image/png")
        self.set_header("Cache-Control", "max-age=3600")
        self.write(content)


class ThumbnailHandler(_PNGHandler):
    def png(self, index: int) -> bytes:
        if not 0 <= index < len(self.data.table):
            raise IndexError(index)
        return self.data.thumbnail(index)


class NewImageHandler(_PNGHandler):
    def png(self, index: int) -> bytes:
        if not 0 <= index < len(self.data.new_images):
            raise IndexError(index)
        return self.data.new_thumbnail(index)


def make_server(data: RunData, host: str = "127.0.0.1", port: int = 5006, **kwargs):
    """A started-on-demand :class:`bokeh.server.server.Server` of the explorer on
    ``host:port`` (port 0: a free one; ``server.port`` says which)."""
    from bokeh.application import Application
    from bokeh.application.handlers.function import FunctionHandler
    from bokeh.server.server import Server

    def make_doc(doc):
        build_document(doc, data, prefix="/", arguments=session_arguments(doc))

    origins = [f"{h}:{port}" for h in ("127.0.0.1", "localhost", host)] if port else ["*"]
    return Server({"/": Application(FunctionHandler(make_doc))}, address=host, port=port,
                  allow_websocket_origin=origins,
                  extra_patterns=[(r"/thumb/(\d+)\.png", ThumbnailHandler, {"data": data}),
                                  (r"/new/(\d+)\.png", NewImageHandler, {"data": data})],
                  websocket_max_message_size=200 * 1024 * 1024, **kwargs)


