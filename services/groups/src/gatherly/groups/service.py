"""Use cases of the groups service: one function per thing a person does, state and outbox committed together."""
