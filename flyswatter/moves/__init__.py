"""Moving an issue to another project, and the old keys that keep answering for it."""
