"""Read models of the log that drive side effects: the email outbox, reader positions."""
