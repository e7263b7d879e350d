"""Use cases of the users service: one function per thing a person does, state and outbox committed together."""
