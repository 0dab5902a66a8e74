"""The web dashboard over the run store (``pip install "justpipe[dashboard]"``).

``justpipe dashboard`` serves it; ``justpipe.dashboard.server.create_app(registry)``
returns the ASGI app. This package's ``__init__`` imports nothing optional, so
``justpipe.dashboard.api`` (pure Python) works without Starlette installed.
"""
