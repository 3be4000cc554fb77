"""Wire formats shared by the core and every plugin (HL7 v2 today; XML 130 and FHIR later)."""
