"""HSSK Gateway: HL7 v2 / XML 130 intake, normalisation and durable delivery for Vietnam's HSSK."""

__version__ = "0.1.0"
