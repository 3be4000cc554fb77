"""The operator console at ``/admin/ui/``: server-rendered pages over the admin API, in Vietnamese
and English (see :mod:`gateway.transports.console.resource`)."""
