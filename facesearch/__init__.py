"""facesearch, the application: the ``facesearch`` command (:mod:`facesearch.cli`) composes the core
(``search_engine``), the queue (``ingest``) and the web app (``web``); it is the one place that
imports across those layers."""
