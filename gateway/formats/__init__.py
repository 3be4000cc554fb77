"""Wire formats, above the canonical model and below everything else: HL7 v2 helpers over
python-hl7, MLLP framing, XML 130 read and written over lxml, FHIR rendering. Each turns bytes
into the model (:mod:`gateway.model`) or the model into bytes, and imports nothing of the gateway
but the model."""
