"""Gatherly kernel: the mechanisms every service shares (settings, db, outbox, log, consumers, auth, web)."""
