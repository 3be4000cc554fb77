"""The machinery: intake, pipeline, store, outbox and delivery, the hook contract and plugin
loading. It imports the rules, the formats and the model below it, and the built-in sources and
destination kinds beside it only to register them; never the transports above (the README's
"Layout")."""
