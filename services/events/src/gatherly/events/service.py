"""Use cases of the events service: one function per thing a person does, state and outbox committed together."""
