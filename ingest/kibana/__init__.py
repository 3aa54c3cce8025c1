"""Kibana, all in one place: the saved objects facesearch ships (:mod:`.objects`) and the client
that imports them (:mod:`.client`)."""
