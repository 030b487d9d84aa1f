"""uvicorn's httptools protocol with the limits a public server needs and uvicorn lacks.

uvicorn (0.54) has an idle timeout between requests, but nothing bounds a request's headers:
a client that sends them a byte at a time, or sends megabytes of them, keeps a connection and
its memory for as long as it likes (the keep-alive timer is cancelled by the first byte). Here:

- a connection must complete each request's headers within `header_timeout` seconds of its
  opening or of the previous response, or it is closed;
- a request's headers are at most `max_header_bytes` in all and `max_headers` in number, or
  the parser stops and the client gets uvicorn's one-line 400 and a closed connection.

The body is bounded by the app (serve/app.py: size, and a deadline for reading it).
httptools is kept (not h11, which bounds headers itself) because it serves 3x the requests per
second at batch 1 (docs/benchmarks.md).
"""

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

HEADER_TIMEOUT_S = 10.0
MAX_HEADER_BYTES = 16 * 1024
MAX_HEADERS = 100


class HeaderLimitError(Exception):
    """Raised from the parser's callback: httptools turns it into a parse error (uvicorn's 400)."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    header_timeout = HEADER_TIMEOUT_S
    max_header_bytes = MAX_HEADER_BYTES
    max_headers = MAX_HEADERS

    def connection_made(self, transport) -> None:
        super().connection_made(transport)
        self.header_bytes, self.header_timer = 0, None
        self.arm_header_timer()

    def arm_header_timer(self) -> None:
        self.cancel_header_timer()
        self.header_timer = self.loop.call_later(self.header_timeout, self.header_timeout_handler)

    def cancel_header_timer(self) -> None:
        if self.header_timer is not None:
            self.header_timer.cancel()
            self.header_timer = None

    def header_timeout_handler(self) -> None:
        self.header_timer = None
        if not self.transport.is_closing():
            self.logger.info("closed a connection whose request headers took over %.0f s", self.header_timeout)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self.header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.header_bytes += len(url)
        if self.header_bytes > self.max_header_bytes:
            raise HeaderLimitError("request line too long")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.header_bytes += len(name) + len(value) + 4
        if self.header_bytes > self.max_header_bytes or len(self.headers) >= self.max_headers:
            raise HeaderLimitError("request headers too large")
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self.cancel_header_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self.arm_header_timer()

    def connection_lost(self, exc) -> None:
        self.cancel_header_timer()
        super().connection_lost(exc)
