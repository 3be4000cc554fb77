"""Transports turn bytes on a socket into envelopes and outcomes into answers; they know no vendor."""
