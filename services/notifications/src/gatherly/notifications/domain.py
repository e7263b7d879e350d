"""What the notifications service's entities are and the rules they obey: no I/O, no framework."""
