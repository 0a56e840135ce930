"""Kafka adapter: CloudEvents codecs, catalog event types, client settings, dead letters."""
