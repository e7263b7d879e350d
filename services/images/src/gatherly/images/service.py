"""Use cases of the images service: one function per thing a person does, state and outbox committed together."""
