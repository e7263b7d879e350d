"""Use cases of the notifications service: one function per thing a person does, state and outbox committed together."""
